//! Authorization: who may use which generator. Deny by default.
//!
//! Rules are compiled once per configuration snapshot. The hot path looks up the rules that
//! name the generator exactly (a hash lookup) plus the few rules with generator globs, and
//! checks their subjects; the full scan that explains a denial runs only when denying.
//!
//! **Layout.** With thousands of namespaces, the rules a request reads are rarely in the CPU's
//! caches, and every pointer followed is a cache miss. So the compiled rules keep short names
//! inline ([`CompactString`]: up to 24 bytes, which holds most Kubernetes names and generator
//! references) and short lists inline ([`SmallVec`]): a rule's subjects, their name patterns
//! and a generator's rule indices sit in the rule or the map's bucket instead of behind
//! pointers (figures 2 and 4 of the benchmark: 4–5 fewer cache misses per request).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use esi_api::{ErrorCode, Identity};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use smallvec::SmallVec;
use wildmatch::WildMatch;

use crate::config::resources::{AuthorizationSpec, LabelSelector, Subject};
use crate::lookup::LookupMap;

/// A name pattern: `*` alone, an exact name, or a glob with `*`/`?`.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Matches anything.
    Any,
    /// Matches one exact string.
    Exact(CompactString),
    /// Matches a glob.
    Glob(Box<WildMatch>),
}

impl Pattern {
    /// Compiles a pattern.
    pub fn new(p: &str) -> Self {
        if p == "*" {
            Pattern::Any
        } else if p.contains(['*', '?']) {
            Pattern::Glob(Box::new(WildMatch::new(p)))
        } else {
            Pattern::Exact(p.into())
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == s,
            Pattern::Glob(g) => g.matches(s),
        }
    }
}

/// A subject's name patterns (`None`: the field is left out, anything matches). Two inline:
/// `[app, "worker-*"]` is as common as one name.
type Patterns = Option<SmallVec<[Pattern; 2]>>;

fn any_matches(patterns: &Patterns, s: &str) -> bool {
    patterns
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p.matches(s)))
}

#[derive(Debug)]
struct CompiledSubject {
    namespaces: Patterns,
    service_accounts: Patterns,
    clusters: Patterns,
    selector: Option<Box<LabelSelector>>,
}

impl CompiledSubject {
    fn matches(&self, id: &Identity, labels: &BTreeMap<String, String>) -> bool {
        any_matches(&self.namespaces, &id.namespace)
            && any_matches(&self.service_accounts, &id.service_account.name)
            && any_matches(&self.clusters, &id.cluster)
            && self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }
}

struct Rule {
    name: CompactString,
    subjects: SmallVec<[CompiledSubject; 1]>,
    max_ttl: Option<Duration>,
    limiter: Option<Arc<Limiter>>,
}

/// A rule's rate limit: its buckets (one per workload) and the quota they count against. A
/// reload keeps the buckets of a rule whose name and quota did not change
/// ([`Authorizer::carrying`]), so that editing any resource does not refill them all.
#[derive(Debug)]
struct Limiter {
    quota: Quota,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Rule {
    fn covers(&self, id: &Identity, labels: &BTreeMap<String, String>) -> bool {
        self.subjects.iter().any(|s| s.matches(id, labels))
    }
}

/// An allowed request.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The Authorization that allowed it (inline up to 24 bytes: no allocation per request).
    pub rule: CompactString,
    /// Its max TTL, if any.
    pub max_ttl: Option<Duration>,
}

/// A refused request: the API code, and a message naming the check that failed (mentioning
/// only the caller's own identity and target, never other rules).
#[derive(Debug, Clone)]
pub struct Denied {
    /// `policy_denied` or `rate_limited`.
    pub code: ErrorCode,
    /// Safe explanation.
    pub message: String,
    /// For `rate_limited`: when to retry.
    pub retry_after: Option<Duration>,
    /// The rule involved, for the audit log (never sent to the caller).
    pub rule: Option<String>,
}

/// Compiled Authorizations.
#[derive(Default)]
pub struct Authorizer {
    rules: Vec<Rule>,
    /// Rules naming a generator exactly, by its reference, in rule order.
    exact: LookupMap<CompactString, SmallVec<[usize; 2]>>,
    /// Glob patterns whose namespace part is literal, by that namespace: a request only matches
    /// the globs of its own namespace (thousands of tenants with `team-x/*/*` rules would
    /// otherwise cost a glob match each per request).
    globbed_in: LookupMap<CompactString, Vec<(Pattern, usize)>>,
    /// Glob patterns whose namespace part is itself a glob (rare): checked for every request.
    globbed_any: Vec<(Pattern, usize)>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// Validation failure of one Authorization: field path and message.
pub type FieldError = (String, String);

/// Checks an Authorization spec beyond what serde checks.
pub fn validate(spec: &AuthorizationSpec) -> Result<(), FieldError> {
    if spec.subjects.is_empty() {
        return Err((
            "spec.subjects".into(),
            "must list at least one subject".into(),
        ));
    }
    for (i, s) in spec.subjects.iter().enumerate() {
        validate_subject(s).map_err(|m| (format!("spec.subjects[{i}]"), m))?;
    }
    if spec.generators.is_empty() {
        return Err((
            "spec.generators".into(),
            "must list at least one namespace/kind/name pattern".into(),
        ));
    }
    for (i, g) in spec.generators.iter().enumerate() {
        let parts: Vec<&str> = g.split('/').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err((
                format!("spec.generators[{i}]"),
                format!("{g:?} is not namespace/kind/name (globs allowed in each part)"),
            ));
        }
    }
    if let Some(ttl) = &spec.max_ttl {
        let d = crate::config::resources::parse_duration("spec.maxTTL", ttl)
            .map_err(|m| ("spec.maxTTL".to_owned(), m))?;
        if d.is_zero() {
            return Err(("spec.maxTTL".into(), "must be positive".into()));
        }
    }
    if let Some(rl) = &spec.rate_limit {
        if rl.per_minute == 0 {
            return Err((
                "spec.rateLimit.perMinute".into(),
                "must be at least 1".into(),
            ));
        }
        if rl.burst == Some(0) {
            return Err(("spec.rateLimit.burst".into(), "must be at least 1".into()));
        }
        // The limiter keeps the time a full burst takes to refill, `(burst - 1)` intervals of
        // `60s / perMinute`, in u64 nanoseconds (about 584 years); past that its arithmetic
        // overflows (a panic in debug builds, a wrong limit in release ones).
        let interval_ns = 60_000_000_000 / u64::from(rl.per_minute);
        if let Some(burst) = rl.burst
            && interval_ns.checked_mul(u64::from(burst) - 1).is_none()
        {
            return Err((
                "spec.rateLimit.burst".into(),
                format!(
                    "{burst} at {} per minute takes more than 584 years to refill; lower it",
                    rl.per_minute
                ),
            ));
        }
    }
    Ok(())
}

fn unconstrained(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|p| p == "*"))
}

fn validate_subject(s: &Subject) -> Result<(), String> {
    for (field, list) in [
        ("clusters", &s.clusters),
        ("namespaces", &s.namespaces),
        ("serviceAccounts", &s.service_accounts),
    ] {
        if let Some(l) = list {
            if l.is_empty() {
                return Err(format!(
                    "{field} is empty (leave it out to match any, or list names)"
                ));
            }
            if l.iter().any(|p| p.is_empty()) {
                return Err(format!("{field} holds an empty pattern"));
            }
        }
    }
    let selector_constrains = s
        .cluster_selector
        .as_ref()
        .is_some_and(|sel| !sel.match_labels.is_empty() || !sel.match_expressions.is_empty());
    if unconstrained(&s.clusters)
        && !selector_constrains
        && unconstrained(&s.namespaces)
        && unconstrained(&s.service_accounts)
    {
        return Err(
            "constrains nothing: it would match every workload of every cluster; \
                    set clusters, clusterSelector, namespaces or serviceAccounts"
                .to_owned(),
        );
    }
    Ok(())
}

impl Authorizer {
    /// Compiles validated specs, in the given order (the loader sorts by name).
    pub fn new(specs: &[(String, AuthorizationSpec)]) -> Self {
        Self::carrying(specs, None)
    }

    /// Same as [`Authorizer::new`], keeping the rate-limit buckets of `previous`'s rules
    /// whose name and quota are unchanged (a configuration reload).
    pub fn carrying(specs: &[(String, AuthorizationSpec)], previous: Option<&Authorizer>) -> Self {
        let kept: HashMap<&str, &Arc<Limiter>> = previous
            .map(|p| {
                p.rules
                    .iter()
                    .filter_map(|r| Some((r.name.as_str(), r.limiter.as_ref()?)))
                    .collect()
            })
            .unwrap_or_default();
        // Sized once: a configuration's thousands of rules would otherwise be copied into ever
        // larger allocations, each on fresh pages, at every cold start.
        let mut az = Authorizer {
            rules: Vec::with_capacity(specs.len()),
            exact: LookupMap::with_capacity_and_hasher(specs.len(), Default::default()),
            ..Authorizer::default()
        };
        for (name, spec) in specs {
            let idx = az.rules.len();
            let compile = |l: &Option<Vec<String>>| {
                l.as_ref()
                    .map(|v| v.iter().map(|p| Pattern::new(p)).collect())
            };
            let subjects = spec
                .subjects
                .iter()
                .map(|s| CompiledSubject {
                    clusters: compile(&s.clusters),
                    selector: s.cluster_selector.clone().map(Box::new),
                    namespaces: compile(&s.namespaces),
                    service_accounts: compile(&s.service_accounts),
                })
                .collect();
            let max_ttl = spec
                .max_ttl
                .as_deref()
                .and_then(|t| humantime::parse_duration(t).ok());
            let limiter = spec.rate_limit.as_ref().and_then(|rl| {
                let per_minute = NonZeroU32::new(rl.per_minute)?;
                let burst = NonZeroU32::new(rl.burst.unwrap_or(rl.per_minute).max(1))?;
                let quota = Quota::per_minute(per_minute).allow_burst(burst);
                Some(match kept.get(name.as_str()) {
                    Some(&kept) if kept.quota == quota => kept.clone(),
                    _ => Arc::new(Limiter {
                        quota,
                        limiter: RateLimiter::keyed(quota),
                    }),
                })
            });
            az.rules.push(Rule {
                name: name.as_str().into(),
                subjects,
                max_ttl,
                limiter,
            });
            for g in &spec.generators {
                match Pattern::new(g) {
                    Pattern::Exact(e) => az.exact.entry(e).or_default().push(idx),
                    other => match g.split_once('/') {
                        Some((ns, _)) if !ns.contains(['*', '?']) => {
                            az.globbed_in
                                .entry(ns.into())
                                .or_default()
                                .push((other, idx));
                        }
                        _ => az.globbed_any.push((other, idx)),
                    },
                }
            }
        }
        az
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides whether `id` (from a cluster with `labels`) may call `generator`
    /// (`namespace/kind/name`), consuming the matching rule's rate limit.
    pub fn authorize(
        &self,
        id: &Identity,
        labels: &BTreeMap<String, String>,
        generator: &str,
    ) -> Result<Allowed, Denied> {
        self.decide(id, labels, generator, true)
    }

    /// Same decision without consuming the rate limit (the dry run of `POST /v1/authorize`).
    pub fn check(
        &self,
        id: &Identity,
        labels: &BTreeMap<String, String>,
        generator: &str,
    ) -> Result<Allowed, Denied> {
        self.decide(id, labels, generator, false)
    }

    fn decide(
        &self,
        id: &Identity,
        labels: &BTreeMap<String, String>,
        generator: &str,
        consume: bool,
    ) -> Result<Allowed, Denied> {
        // Every rule that allows the request applies its limits: the strictest maxTTL, and
        // each rate limit is consumed. So a broad grant cannot lift the limits another rule
        // sets for the same workload, whatever their names. The audit names the first by name.
        let mut allowing: SmallVec<[usize; 2]> = SmallVec::new();
        let exact = self
            .exact
            .get(generator)
            .map(SmallVec::as_slice)
            .unwrap_or(&[]);
        for &idx in exact {
            if self.rules[idx].covers(id, labels) {
                allowing.push(idx);
            }
        }
        let namespace = generator.split_once('/').map_or(generator, |(ns, _)| ns);
        let same_namespace = self
            .globbed_in
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (pattern, idx) in same_namespace.iter().chain(&self.globbed_any) {
            if pattern.matches(generator) && self.rules[*idx].covers(id, labels) {
                allowing.push(*idx);
            }
        }
        if let Some(&first) = allowing.iter().min() {
            let mut max_ttl: Option<Duration> = None;
            let mut key = None;
            for &idx in &allowing {
                let rule = &self.rules[idx];
                max_ttl = match (max_ttl, rule.max_ttl) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let Some(limiter) = rule.limiter.as_ref().filter(|_| consume) else {
                    continue;
                };
                let key = key.get_or_insert_with(|| {
                    format!(
                        "{}/{}/{}",
                        id.cluster, id.namespace, id.service_account.name
                    )
                });
                if let Err(not_until) = limiter.limiter.check_key(key) {
                    use governor::clock::Clock as _;
                    let wait =
                        not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                    return Err(Denied {
                        code: ErrorCode::RateLimited,
                        message: "rate limit of this workload exceeded".to_owned(),
                        retry_after: Some(wait),
                        rule: Some(rule.name.to_string()),
                    });
                }
            }
            return Ok(Allowed {
                rule: self.rules[first].name.clone(),
                max_ttl,
            });
        }
        // Slow path: explain the denial.
        let covered = self.rules.iter().any(|r| r.covers(id, labels));
        let message = if covered {
            format!(
                "an Authorization covers this workload, but none allows generator {generator:?}"
            )
        } else {
            format!(
                "no Authorization covers cluster {:?}, namespace {:?}, service account {:?}",
                id.cluster, id.namespace, id.service_account.name
            )
        };
        Err(Denied {
            code: ErrorCode::PolicyDenied,
            message,
            retry_after: None,
            rule: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resources::{LabelSelectorRequirement, RateLimit, SelectorOperator};
    use esi_api::ObjectRef;

    fn id(cluster: &str, ns: &str, sa: &str) -> Identity {
        Identity {
            cluster: cluster.into(),
            issuer: "https://i".into(),
            namespace: ns.into(),
            service_account: ObjectRef {
                name: sa.into(),
                uid: String::new(),
            },
            pod: None,
            subject: Identity::service_account_subject(ns, sa),
            token_expires_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn subject(clusters: Option<&[&str]>, ns: Option<&[&str]>, sa: Option<&[&str]>) -> Subject {
        let v = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        Subject {
            clusters: v(clusters),
            cluster_selector: None,
            namespaces: v(ns),
            service_accounts: v(sa),
        }
    }

    fn rule(subjects: Vec<Subject>, generators: &[&str]) -> AuthorizationSpec {
        AuthorizationSpec {
            subjects,
            generators: generators.iter().map(|s| s.to_string()).collect(),
            max_ttl: None,
            rate_limit: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let mut prod = rule(
            vec![subject(
                None,
                Some(&["payments"]),
                Some(&["api", "worker-*"]),
            )],
            &["payments/VaultDynamicSecret/db"],
        );
        prod.subjects[0].cluster_selector = Some(LabelSelector {
            match_labels: labels(&[("env", "prod")]),
            match_expressions: vec![LabelSelectorRequirement {
                key: "region".into(),
                operator: SelectorOperator::In,
                values: vec!["eu".into(), "us".into()],
            }],
        });
        let shared = rule(
            vec![subject(Some(&["dev-*", "ci"]), Some(&["team-?"]), None)],
            &["shared/Password/*", "shared/UUID/id"],
        );
        let mut ttl = rule(
            vec![subject(Some(&["edge"]), None, Some(&["agent"]))],
            &["*/*/*"],
        );
        ttl.max_ttl = Some("15m".into());
        let az = Authorizer::new(&[
            ("prod".into(), prod),
            ("shared".into(), shared),
            ("ttl".into(), ttl),
        ]);
        let prod_eu = labels(&[("env", "prod"), ("region", "eu")]);
        let prod_ap = labels(&[("env", "prod"), ("region", "ap")]);
        let none = labels(&[]);
        type Case<'a> = (
            &'a str,
            Identity,
            &'a BTreeMap<String, String>,
            &'a str,
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "selector + exact",
                id("eu-1", "payments", "api"),
                &prod_eu,
                "payments/VaultDynamicSecret/db",
                Ok("prod"),
            ),
            (
                "sa glob",
                id("eu-1", "payments", "worker-7"),
                &prod_eu,
                "payments/VaultDynamicSecret/db",
                Ok("prod"),
            ),
            (
                "selector expression fails",
                id("ap-1", "payments", "api"),
                &prod_ap,
                "payments/VaultDynamicSecret/db",
                Err("no Authorization covers"),
            ),
            (
                "sa not matched",
                id("eu-1", "payments", "admin"),
                &prod_eu,
                "payments/VaultDynamicSecret/db",
                Err("no Authorization covers"),
            ),
            (
                "covered, other generator",
                id("eu-1", "payments", "api"),
                &prod_eu,
                "payments/VaultDynamicSecret/admin",
                Err("none allows generator"),
            ),
            (
                "cluster glob + ns ?",
                id("dev-3", "team-a", "anyone"),
                &none,
                "shared/Password/x",
                Ok("shared"),
            ),
            (
                "cluster exact",
                id("ci", "team-b", "x"),
                &none,
                "shared/UUID/id",
                Ok("shared"),
            ),
            (
                "ns ? is one char",
                id("ci", "team-ab", "x"),
                &none,
                "shared/UUID/id",
                Err("no Authorization covers"),
            ),
            (
                "cluster not matched",
                id("prod-1", "team-a", "x"),
                &none,
                "shared/UUID/id",
                Err("no Authorization covers"),
            ),
            (
                "generator glob",
                id("edge", "any", "agent"),
                &none,
                "x/y/z",
                Ok("ttl"),
            ),
            (
                "deny by default",
                id("nobody", "nowhere", "none"),
                &none,
                "x/y/z",
                Err("no Authorization covers"),
            ),
        ];
        for (name, who, labels, generator, expected) in cases {
            match (az.authorize(&who, labels, generator), expected) {
                (Ok(a), Ok(rule)) => assert_eq!(a.rule, rule, "{name}"),
                (Err(d), Err(fragment)) => {
                    assert_eq!(d.code, ErrorCode::PolicyDenied, "{name}");
                    assert!(d.message.contains(fragment), "{name}: {}", d.message);
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        let a = az
            .authorize(&id("edge", "n", "agent"), &none, "a/b/c")
            .unwrap();
        assert_eq!(a.max_ttl, Some(Duration::from_secs(900)));
    }

    #[test]
    fn generator_globs_match_within_and_across_namespaces() {
        let az = Authorizer::new(&[
            (
                "ns-literal".into(),
                rule(vec![subject(None, Some(&["a"]), None)], &["team-a/*/db-?"]),
            ),
            (
                "ns-glob".into(),
                rule(vec![subject(None, Some(&["b"]), None)], &["team-*/UUID/*"]),
            ),
        ]);
        let none = labels(&[]);
        assert_eq!(
            az.authorize(&id("c", "a", "x"), &none, "team-a/Password/db-1")
                .unwrap()
                .rule,
            "ns-literal"
        );
        assert!(
            az.authorize(&id("c", "a", "x"), &none, "team-b/Password/db-1")
                .is_err()
        );
        assert!(
            az.authorize(&id("c", "a", "x"), &none, "team-a/Password/db-10")
                .is_err()
        );
        assert_eq!(
            az.authorize(&id("c", "b", "x"), &none, "team-zz/UUID/anything")
                .unwrap()
                .rule,
            "ns-glob"
        );
        assert!(
            az.authorize(&id("c", "b", "x"), &none, "other/UUID/anything")
                .is_err()
        );
    }

    #[test]
    fn denial_does_not_reveal_other_rules() {
        let az = Authorizer::new(&[(
            "secret-team-rule".into(),
            rule(
                vec![subject(None, Some(&["secret-team"]), None)],
                &["secret-team/Password/vault-root"],
            ),
        )]);
        let d = az
            .authorize(
                &id("c", "intruder", "sa"),
                &labels(&[]),
                "secret-team/Password/vault-root",
            )
            .unwrap_err();
        assert!(!d.message.contains("secret-team-rule"));
        assert!(!d.message.contains("secret-team\""), "{}", d.message);
    }

    #[test]
    fn every_allowing_rule_applies_its_limits_whatever_its_name() {
        let mut open = rule(vec![subject(None, Some(&["ns"]), None)], &["ns/*/*"]);
        open.max_ttl = Some("1h".into());
        let mut limited = rule(vec![subject(None, Some(&["ns"]), None)], &["ns/UUID/id"]);
        limited.max_ttl = Some("15m".into());
        limited.rate_limit = Some(RateLimit {
            per_minute: 60,
            burst: Some(1),
        });
        let none = labels(&[]);
        // The broad grant sorts first by name either way round; the limits hold regardless.
        for (first, second) in [("a-open", "z-limited"), ("z-open", "a-limited")] {
            let az = Authorizer::new(&sorted(vec![
                (first.to_owned(), open.clone()),
                (second.to_owned(), limited.clone()),
            ]));
            let ok = az
                .authorize(&id("c", "ns", "one"), &none, "ns/UUID/id")
                .unwrap();
            assert_eq!(
                ok.rule,
                first.min(second),
                "the audit names the first by name"
            );
            assert_eq!(
                ok.max_ttl,
                Some(Duration::from_secs(15 * 60)),
                "the strictest"
            );
            let d = az
                .authorize(&id("c", "ns", "one"), &none, "ns/UUID/id")
                .unwrap_err();
            assert_eq!(d.code, ErrorCode::RateLimited);
            assert_eq!(d.rule.as_deref(), Some(second));
            assert!(d.retry_after.is_some());
            // Another subject has its own bucket; another generator only the broad rule.
            assert!(
                az.authorize(&id("c", "ns", "two"), &none, "ns/UUID/id")
                    .is_ok()
            );
            let other = az
                .authorize(&id("c", "ns", "one"), &none, "ns/Password/db")
                .unwrap();
            assert_eq!(
                (other.rule.as_str(), other.max_ttl),
                (first, Some(Duration::from_secs(3600)))
            );
        }
    }

    fn sorted(mut specs: Vec<(String, AuthorizationSpec)>) -> Vec<(String, AuthorizationSpec)> {
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        specs
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_unchanged_limits() {
        let mut limited = rule(vec![subject(None, Some(&["ns"]), None)], &["ns/UUID/id"]);
        limited.rate_limit = Some(RateLimit {
            per_minute: 1,
            burst: Some(1),
        });
        let specs = vec![("limited".to_owned(), limited.clone())];
        let none = labels(&[]);
        let me = id("c", "ns", "one");
        let first = Authorizer::new(&specs);
        assert!(first.authorize(&me, &none, "ns/UUID/id").is_ok());
        assert!(first.authorize(&me, &none, "ns/UUID/id").is_err());
        // Reloaded unchanged (another resource edited): the bucket is still empty.
        let reloaded = Authorizer::carrying(&specs, Some(&first));
        assert_eq!(
            reloaded
                .authorize(&me, &none, "ns/UUID/id")
                .unwrap_err()
                .code,
            ErrorCode::RateLimited
        );
        // A new quota starts new buckets.
        limited.rate_limit = Some(RateLimit {
            per_minute: 1,
            burst: Some(2),
        });
        let changed = Authorizer::carrying(&[("limited".to_owned(), limited)], Some(&reloaded));
        assert!(changed.authorize(&me, &none, "ns/UUID/id").is_ok());
    }

    #[test]
    fn validation_rejects_a_burst_the_limiter_cannot_count() {
        let mut r = rule(vec![subject(None, Some(&["ns"]), None)], &["ns/UUID/id"]);
        for (per_minute, burst, ok) in [
            (1, u32::MAX, false),
            (6, u32::MAX, false),
            (6, 1_844_674_409, false),
            (6, 1_844_674_408, true),
            (60, u32::MAX, true),
            (u32::MAX, u32::MAX, true),
        ] {
            r.rate_limit = Some(RateLimit {
                per_minute,
                burst: Some(burst),
            });
            match validate(&r) {
                Ok(()) => {
                    assert!(ok, "{per_minute}/min, burst {burst} accepted");
                    // What is accepted compiles and decides.
                    let az = Authorizer::new(&[("r".to_owned(), r.clone())]);
                    assert!(
                        az.authorize(&id("c", "ns", "sa"), &labels(&[]), "ns/UUID/id")
                            .is_ok()
                    );
                }
                Err((field, message)) => {
                    assert!(!ok, "{per_minute}/min, burst {burst}: {message}");
                    assert_eq!(field, "spec.rateLimit.burst");
                    assert!(message.contains("584 years"), "{message}");
                }
            }
        }
    }

    #[test]
    fn validation_rejects_rules_that_constrain_nothing() {
        assert!(validate(&rule(vec![subject(None, None, None)], &["a/b/c"])).is_err());
        assert!(
            validate(&rule(
                vec![subject(Some(&["*"]), Some(&["*"]), Some(&["*"]))],
                &["a/b/c"]
            ))
            .is_err()
        );
        assert!(validate(&rule(vec![subject(None, None, Some(&["app"]))], &["a/b/c"])).is_ok());
        let mut sel = subject(None, None, None);
        sel.cluster_selector = Some(LabelSelector::default());
        assert!(
            validate(&rule(vec![sel.clone()], &["a/b/c"])).is_err(),
            "an empty selector constrains nothing"
        );
        sel.cluster_selector = Some(LabelSelector {
            match_labels: labels(&[("env", "prod")]),
            match_expressions: vec![],
        });
        assert!(validate(&rule(vec![sel], &["a/b/c"])).is_ok());
        assert!(validate(&rule(vec![subject(Some(&[]), None, None)], &["a/b/c"])).is_err());
    }
}
