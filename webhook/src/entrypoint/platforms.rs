//! The platforms a Pod may be scheduled on, as far as the Pod itself says: its `nodeSelector`
//! and its required node affinity, read for the two node labels every kubelet sets,
//! `kubernetes.io/arch` and `kubernetes.io/os`. An image index's image is read for each of
//! those platforms; other labels and fields (zones, instance types, node names) say nothing
//! about a platform and are not read.

use super::{ARCH_LABEL, LookupError, OS_LABEL, Platform};
use crate::pod::{NodeSelectorRequirement, PodSpec};

/// What a Pod's `nodeSelector` and required node affinity ask of a node's OS and architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPlatforms {
    /// `nodeSelector`'s `kubernetes.io/os`.
    os: Option<String>,
    /// `nodeSelector`'s `kubernetes.io/arch`.
    arch: Option<String>,
    /// The required node affinity's terms, each as its requirements on the two labels (a node
    /// must meet one term); `None` when the Pod has no required node affinity.
    terms: Option<Vec<Vec<Requirement>>>,
}

/// One `matchExpressions` entry on `kubernetes.io/os` or `kubernetes.io/arch`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    /// Whether it is about the OS (otherwise the architecture).
    os: bool,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    In(Vec<String>),
    NotIn(Vec<String>),
    /// `Exists`: every node has both labels.
    Any,
    /// `DoesNotExist`, or `Gt`/`Lt` (which need an integer label value), or an operator
    /// Kubernetes does not have: no node meets it.
    None,
}

impl Requirement {
    fn read(r: &NodeSelectorRequirement) -> Option<Self> {
        let os = match r.key.as_str() {
            OS_LABEL => true,
            ARCH_LABEL => false,
            _ => return None,
        };
        let values = || r.values.clone().unwrap_or_default();
        let test = match r.operator.as_str() {
            "In" => Test::In(values()),
            "NotIn" => Test::NotIn(values()),
            "Exists" => Test::Any,
            _ => Test::None,
        };
        Some(Self { os, test })
    }

    fn allows(&self, p: &Platform) -> bool {
        let value = if self.os { &p.os } else { &p.architecture };
        match &self.test {
            Test::In(values) => values.contains(value),
            Test::NotIn(values) => !values.contains(value),
            Test::Any => true,
            Test::None => false,
        }
    }

    /// The values it names, if it names the label's only possible values (`In`).
    fn named(&self, os: bool) -> Option<&[String]> {
        match &self.test {
            Test::In(values) if self.os == os => Some(values),
            _ => None,
        }
    }
}

impl PodPlatforms {
    /// What `spec` asks.
    pub fn of(spec: &PodSpec) -> Self {
        let label = |key: &str| spec.node_selector.as_ref()?.get(key).cloned();
        let terms = spec.required_node_selector().map(|selector| {
            selector
                .node_selector_terms
                .iter()
                .map(|term| {
                    term.match_expressions
                        .iter()
                        .flatten()
                        .filter_map(Requirement::read)
                        .collect()
                })
                .collect()
        });
        Self {
            os: label(OS_LABEL),
            arch: label(ARCH_LABEL),
            terms,
        }
    }

    /// Whether a node of platform `p` meets what the Pod asks (the variant is no node label).
    pub fn allows(&self, p: &Platform) -> bool {
        self.os.as_ref().is_none_or(|os| *os == p.os)
            && self.arch.as_ref().is_none_or(|a| *a == p.architecture)
            && self
                .terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|term| term.iter().all(|r| r.allows(p))))
    }

    /// The platforms the Pod names itself: its `nodeSelector`'s architecture, or those its
    /// affinity's terms list with `In` (each term's OS from `In` as well, the
    /// `nodeSelector`'s, or Linux), as far as they read as platforms.
    fn named(&self) -> Vec<Platform> {
        let platform = |os: &str, arch: &str| format!("{os}/{arch}").parse::<Platform>().ok();
        let default_os = self.os.as_deref().unwrap_or("linux");
        let mut out: Vec<Platform> = Vec::new();
        let mut push = |p: Option<Platform>| {
            if let Some(p) = p
                && !out.contains(&p)
            {
                out.push(p);
            }
        };
        if let Some(arch) = &self.arch {
            push(platform(default_os, arch));
        }
        for term in self.terms.iter().flatten() {
            let Some(archs) = term.iter().find_map(|r| r.named(false)) else {
                continue;
            };
            let oses = term.iter().find_map(|r| r.named(true)).map_or_else(
                || vec![default_os],
                |v| v.iter().map(String::as_str).collect(),
            );
            for os in oses {
                for arch in archs {
                    push(platform(os, arch));
                }
            }
        }
        out
    }

    /// The platforms to read an image for: those of the cluster's (`entrypointLookup.platforms`)
    /// the Pod may run on; when it may run on none of them, the platforms it names itself (a
    /// Pod pinned to a platform the list lacks is read for that platform); when it names none
    /// either, [`LookupError::NoSchedulablePlatform`].
    pub fn resolve(&self, cluster: &[Platform]) -> Result<Vec<Platform>, LookupError> {
        let within: Vec<Platform> = cluster.iter().filter(|p| self.allows(p)).cloned().collect();
        if !within.is_empty() {
            return Ok(within);
        }
        let named: Vec<Platform> = self
            .named()
            .into_iter()
            .filter(|p| self.allows(p))
            .collect();
        if !named.is_empty() {
            return Ok(named);
        }
        Err(LookupError::NoSchedulablePlatform(
            cluster
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(spec: serde_json::Value, cluster: &[&str]) -> Result<Vec<String>, String> {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let cluster: Vec<Platform> = cluster.iter().map(|p| p.parse().unwrap()).collect();
        PodPlatforms::of(&spec)
            .resolve(&cluster)
            .map(|ps| ps.iter().map(ToString::to_string).collect())
            .map_err(|e| format!("{}: {e}", e.code()))
    }

    fn affinity(terms: serde_json::Value) -> serde_json::Value {
        json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    fn arch(op: &str, values: &[&str]) -> serde_json::Value {
        json!({"key": ARCH_LABEL, "operator": op, "values": values})
    }

    const BOTH: &[&str] = &["linux/amd64", "linux/arm64"];

    #[test]
    fn a_pod_that_asks_nothing_runs_on_every_platform_of_the_cluster() {
        assert_eq!(resolve(json!({}), BOTH).unwrap(), BOTH);
        // Other labels and node fields say nothing about the platform.
        let spec = json!({
            "nodeSelector": {"disktype": "ssd"},
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                           "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [arch("In", &["arm64"])]}}
                ]
            }}
        });
        assert_eq!(resolve(spec, BOTH).unwrap(), BOTH);
    }

    #[test]
    fn the_node_selector_pins_a_platform() {
        let pinned = |selector: serde_json::Value, cluster: &[&str]| {
            resolve(json!({"nodeSelector": selector}), cluster)
        };
        assert_eq!(
            pinned(json!({ARCH_LABEL: "arm64"}), BOTH).unwrap(),
            ["linux/arm64"]
        );
        // Pinned to a platform the cluster's list lacks: read for it all the same.
        assert_eq!(
            pinned(json!({ARCH_LABEL: "s390x"}), BOTH).unwrap(),
            ["linux/s390x"]
        );
        assert_eq!(
            pinned(json!({ARCH_LABEL: "amd64", OS_LABEL: "windows"}), BOTH).unwrap(),
            ["windows/amd64"]
        );
        // The cluster's variant is kept: nodes have no variant label.
        assert_eq!(
            pinned(json!({ARCH_LABEL: "arm"}), &["linux/amd64", "linux/arm/v7"]).unwrap(),
            ["linux/arm/v7"]
        );
        // The OS alone narrows the cluster's list.
        assert_eq!(
            pinned(
                json!({OS_LABEL: "linux"}),
                &["linux/amd64", "windows/amd64"]
            )
            .unwrap(),
            ["linux/amd64"]
        );
        // An arch no node can have, and nothing else named: nothing to read.
        let e = pinned(json!({ARCH_LABEL: "ARM64"}), BOTH).unwrap_err();
        assert!(
            e.starts_with("no_platform_allowed:") && e.contains("linux/amd64, linux/arm64"),
            "{e}"
        );
    }

    #[test]
    fn required_node_affinity_narrows_the_platforms() {
        // One term, In: the cluster's platforms it allows.
        let one = affinity(json!([{"matchExpressions": [arch("In", &["arm64"])]}]));
        assert_eq!(resolve(one.clone(), BOTH).unwrap(), ["linux/arm64"]);
        // Terms are alternatives: the platforms any of them allows.
        let two = affinity(json!([
            {"matchExpressions": [arch("In", &["arm64"])]},
            {"matchExpressions": [arch("In", &["amd64"])]}
        ]));
        assert_eq!(resolve(two, BOTH).unwrap(), BOTH);
        // A term's requirements all hold: arm64 and not arm64 is no platform.
        let contradiction = affinity(json!([{"matchExpressions": [
            arch("In", &["arm64"]), arch("NotIn", &["arm64"])
        ]}]));
        assert!(resolve(contradiction, BOTH).is_err());
        // NotIn, Exists, DoesNotExist, Gt.
        let not_in = affinity(json!([{"matchExpressions": [arch("NotIn", &["amd64"])]}]));
        assert_eq!(resolve(not_in.clone(), BOTH).unwrap(), ["linux/arm64"]);
        let e = resolve(not_in, &["linux/amd64"]).unwrap_err();
        assert!(e.contains("linux/amd64"), "{e}");
        let exists = affinity(json!([{"matchExpressions": [
            {"key": ARCH_LABEL, "operator": "Exists"}
        ]}]));
        assert_eq!(resolve(exists, BOTH).unwrap(), BOTH);
        for op in ["DoesNotExist", "Gt", "Lt", "in"] {
            let never = affinity(json!([{"matchExpressions": [
                {"key": ARCH_LABEL, "operator": op, "values": ["1"]}
            ]}]));
            assert!(resolve(never, BOTH).is_err(), "{op}");
        }
        // A term without a requirement on the labels allows every platform.
        let open = affinity(json!([
            {"matchExpressions": [arch("In", &["arm64"])]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}
        ]));
        assert_eq!(resolve(open, BOTH).unwrap(), BOTH);
        // Named platforms beyond the cluster's list, with the term's OS.
        let named = affinity(json!([{"matchExpressions": [
            arch("In", &["ppc64le", "s390x"]),
            {"key": OS_LABEL, "operator": "In", "values": ["linux"]}
        ]}]));
        assert_eq!(
            resolve(named, BOTH).unwrap(),
            ["linux/ppc64le", "linux/s390x"]
        );
        // The nodeSelector and the affinity both hold.
        let mut both = one;
        both["nodeSelector"] = json!({ARCH_LABEL: "amd64"});
        assert!(resolve(both, BOTH).is_err());
    }
}
