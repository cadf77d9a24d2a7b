//! The webhook's core: a pure function from a Pod, its namespace, its ServiceAccount's
//! annotations and the webhook configuration to either "leave it alone", a JSON patch, or a
//! denial whose message names the annotation (or Pod field) at fault.
//!
//! The patch is built as explicit RFC 6902 operations against the object the API server sent,
//! never as a diff of a re-serialized Pod: a typed round trip would drop fields this build of
//! k8s-openapi does not know, and a diff would then remove them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::pod::{Container, Pod, PodSpec};
use esi_api::inject::{
    self as contract, AGENT_CONTAINER_NAME, ANN_CLI_RESOURCES, ANN_CONTAINERS,
    ANN_ENTRYPOINT_PREFIX, ANN_ENV, ANN_ENV_FROM, ANN_FEDERATION_URL, ANN_FILE_PREFIX,
    ANN_GENERATORS, ANN_INIT_CONTAINERS, ANN_REFRESH, ANN_REFRESH_AT, ANN_REFRESH_NOTIFY,
    ANN_RUN_AS, ANN_STATUS, ANN_TEMPLATE_PREFIX, ANN_TOKEN_AUDIENCE, ANN_TOKEN_EXPIRATION,
    BINARY_PATH, ContainerSpec, DEFAULT_UID, ENV_ALLOW_HTTP, ENV_POD_NAME, ENV_POD_NAMESPACE,
    ENV_SPEC, FILES_DIR, FileOutput, INIT_CONTAINER_NAME, INJECT_LABEL, INJECT_LABEL_VALUE,
    InjectionSpec, MOUNT_PATH, Notify, Owner, PodAnnotations, RefreshSpec, SPEC_VERSION,
    STATUS_INJECTED, TOKEN_FILE_NAME, TOKEN_MOUNT_PATH, TOKEN_PATH, TOKEN_VOLUME_NAME, VOLUME_NAME,
    limits, request_above_limit,
};

use crate::config::{InitPosition, WebhookConfig};
use crate::patch::{
    Capabilities, CliContainer, EmptyDir, EnvValue, EnvVar, Exec, FieldPath, FieldRef, JsonPatch,
    Mount, Op, Path, Probe, Projected, Resources, SeccompProfile, SecurityContext,
    ServiceAccountToken, TokenSource, Val, Volume, string_literal,
};

/// Resource quantities by resource name (`cpu`, `memory`).
type ResourceMap = BTreeMap<String, String>;

/// Size limit of the memory-backed volume (the esi-cli binary plus credentials).
pub const VOLUME_SIZE_LIMIT: &str = "32Mi";

/// Directories a file output may not take over: mounting the credentials volume there would
/// hide the image's own content.
const FORBIDDEN_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/local/bin",
    "/usr/sbin",
    "/var",
    "/var/lib",
    "/var/run",
    "/var/log",
    "/app",
];

/// What the webhook does with a Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Admit the Pod unchanged.
    Skip {
        /// Why (for logs and the metric label).
        reason: SkipReason,
        /// Warnings returned to the client.
        warnings: Vec<String>,
    },
    /// Admit the Pod with this patch.
    Patch {
        /// The JSON patch.
        patch: JsonPatch,
        /// The spec handed to esi-cli (for logs and tests).
        spec: Box<InjectionSpec>,
        /// Warnings returned to the client.
        warnings: Vec<String>,
    },
    /// Containers that get env vars have no `command` and no `esi.dev/entrypoint.<c>`: decide
    /// again with their images' entrypoints ([`mutate_with_entrypoints`]), read from their
    /// registries ([`crate::entrypoint`]). Only when `entrypointLookup` is on.
    NeedsEntrypoints(Vec<EntrypointWanted>),
}

/// A container whose entrypoint must be read from its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointWanted {
    /// The container's name.
    pub container: String,
    /// Its `image`.
    pub image: String,
    /// Whether it sets `args` (then the image's `CMD` does not run).
    pub sets_args: bool,
}

/// Each container's command line before its `args`, as read from its image (container name →
/// `ENTRYPOINT`, plus `CMD` when it sets no `args`).
pub type Entrypoints = BTreeMap<String, Vec<String>>;

/// Why a Pod is admitted unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The Pod does not carry the opt-in label.
    NotOptedIn,
    /// The Pod already carries `esi.dev/status: injected`.
    AlreadyInjected,
    /// The Pod's namespace is excluded by configuration.
    ExcludedNamespace,
}

impl SkipReason {
    /// A bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOptedIn => "not_opted_in",
            Self::AlreadyInjected => "already_injected",
            Self::ExcludedNamespace => "excluded_namespace",
        }
    }
}

/// A Pod the webhook refuses to admit, with the message the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denial(pub String);

fn deny<T>(msg: impl Into<String>) -> Result<T, Denial> {
    Err(Denial(msg.into()))
}

/// Whether [`mutate`] would inject this Pod (it is opted in, not yet injected, and not in an
/// excluded namespace): only then is its ServiceAccount worth reading.
pub fn wants_injection(pod: &Pod, namespace: &str, cfg: &WebhookConfig) -> bool {
    skip(pod, namespace, cfg).is_none()
}

/// The Pods [`mutate`] admits unchanged, before any annotation is read.
fn skip(pod: &Pod, namespace: &str, cfg: &WebhookConfig) -> Option<Outcome> {
    let opted_in = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL))
        .map(String::as_str)
        == Some(INJECT_LABEL_VALUE);
    if !opted_in {
        return Some(Outcome::Skip {
            reason: SkipReason::NotOptedIn,
            warnings: vec![],
        });
    }
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(contract::is_injected)
    {
        return Some(Outcome::Skip {
            reason: SkipReason::AlreadyInjected,
            warnings: vec![],
        });
    }
    if cfg.excluded_namespaces.iter().any(|n| n == namespace) {
        return Some(Outcome::Skip {
            reason: SkipReason::ExcludedNamespace,
            warnings: vec![format!(
                "esi: namespace {namespace} is excluded from injection; the Pod was admitted without credentials"
            )],
        });
    }
    None
}

/// Decides what to do with a Pod being created in `namespace`.
///
/// `service_account_annotations` are the annotations of the Pod's ServiceAccount when the
/// caller could read them; their `esi.dev/` keys act as defaults the Pod overrides. A denial
/// caused by a Pod that inherited keys names them, so the user knows to look at the
/// ServiceAccount too.
pub fn mutate(
    pod: &Pod,
    namespace: &str,
    service_account_annotations: Option<&BTreeMap<String, String>>,
    cfg: &WebhookConfig,
) -> Result<Outcome, Denial> {
    mutate_with_entrypoints(
        pod,
        namespace,
        service_account_annotations,
        cfg,
        &Entrypoints::new(),
    )
}

/// [`mutate`] knowing the entrypoints `entrypoints` of containers without `command`, read from
/// their images (see [`Outcome::NeedsEntrypoints`]).
pub fn mutate_with_entrypoints(
    pod: &Pod,
    namespace: &str,
    service_account_annotations: Option<&BTreeMap<String, String>>,
    cfg: &WebhookConfig,
    entrypoints: &Entrypoints,
) -> Result<Outcome, Denial> {
    if let Some(outcome) = skip(pod, namespace, cfg) {
        return Ok(outcome);
    }
    let empty = BTreeMap::new();
    let own = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let merged = match service_account_annotations {
        Some(sa) => Cow::Owned(contract::merge_service_account_defaults(own, sa)),
        None => Cow::Borrowed(own),
    };
    plan(pod, &merged, cfg, entrypoints).map_err(|Denial(msg)| match inherited(own, &merged) {
        Some(note) => Denial(format!("{msg} {note}")),
        None => Denial(msg),
    })
}

/// What a denial of `pod` adds when the Pod inherits `esi.dev/` keys from its ServiceAccount
/// (whose annotations are `sa`): `(the Pod inherits K, L from its ServiceAccount)`.
pub fn service_account_note(pod: &Pod, sa: Option<&BTreeMap<String, String>>) -> Option<String> {
    let empty = BTreeMap::new();
    let own = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    inherited(own, &contract::merge_service_account_defaults(own, sa?))
}

/// The note naming the keys of `merged` that `own` does not set, if any.
fn inherited(own: &BTreeMap<String, String>, merged: &BTreeMap<String, String>) -> Option<String> {
    let keys: Vec<&str> = merged
        .keys()
        .filter(|k| !own.contains_key(*k))
        .map(String::as_str)
        .collect();
    (!keys.is_empty()).then(|| {
        format!(
            "(the Pod inherits {} from its ServiceAccount)",
            keys.join(", ")
        )
    })
}

fn plan(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    cfg: &WebhookConfig,
    entrypoints: &Entrypoints,
) -> Result<Outcome, Denial> {
    let ann = contract::parse_annotations(annotations).map_err(|e| Denial(format!("esi: {e}")))?;
    let Some(spec) = pod.spec.as_ref() else {
        return deny("esi: the Pod has no spec");
    };
    Planner {
        pod,
        spec,
        ann: &ann,
        cfg,
        entrypoints,
        warnings: Vec::new(),
    }
    .plan()
}

struct Planner<'a> {
    pod: &'a Pod,
    spec: &'a PodSpec,
    ann: &'a PodAnnotations,
    cfg: &'a WebhookConfig,
    entrypoints: &'a Entrypoints,
    warnings: Vec<String>,
}

/// One chosen container and where it lives in the Pod.
struct Chosen<'a> {
    container: &'a Container,
    /// `/spec/containers` or `/spec/initContainers`.
    list: &'static str,
    index: usize,
}

/// The JSON pointer of the injected mark: `/` in the annotation's name is `~1` (RFC 6901).
const STATUS_PATH: &str = "/metadata/annotations/esi.dev~1status";

fn add(path: impl Into<Path>, value: Val<'_>) -> Op<'_> {
    Op::Add {
        path: path.into(),
        value,
    }
}

/// `Y` under or equal to `X` as paths.
fn path_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || outer == "/"
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn unique_name(base: &str, taken: &mut BTreeSet<Cow<'_, str>>) -> Result<String, Denial> {
    let name = if taken.contains(base) {
        (2..100)
            .map(|i| format!("{base}-{i}"))
            .find(|n| !taken.contains(n.as_str()))
    } else {
        Some(base.to_owned())
    };
    let Some(name) = name else {
        return deny(format!(
            "esi: cannot find a free name for {base}: the Pod uses {base} and {base}-2..{base}-99"
        ));
    };
    taken.insert(Cow::Owned(name.clone()));
    Ok(name)
}

impl<'a> Planner<'a> {
    fn plan(mut self) -> Result<Outcome, Denial> {
        let ann = self.ann;
        let cfg = self.cfg;
        if ann.generators.is_empty() {
            return deny(format!(
                "esi: annotation {ANN_GENERATORS}: required on Pods labelled {INJECT_LABEL}={INJECT_LABEL_VALUE}; \
                 expected alias=namespace/kind/name"
            ));
        }
        let federation_url = self.federation_url()?;
        let chosen = self.choose_containers()?;
        let chosen_names: BTreeSet<&str> =
            chosen.iter().map(|c| c.container.name.as_str()).collect();
        self.check_per_container_annotations(&chosen_names)?;
        self.check_aliases()?;
        let containers = self.container_specs(&chosen);
        let wants_env = containers.values().any(ContainerSpec::wants_env);
        if !wants_env && ann.files.is_empty() {
            return deny(format!(
                "esi: nothing to inject: set {ANN_ENV}, {ANN_ENV_FROM} or {ANN_FILE_PREFIX}<name> to say where the credentials go"
            ));
        }
        let owner = self.owner(&chosen)?;
        let (files, dirs) = self.files(&owner)?;
        let (audience, expiration) = self.token()?;
        let refresh = self.refresh()?;
        let resources = self.cli_resources()?;
        let commands = match self.commands(&chosen, &containers)? {
            Ok(commands) => commands,
            Err(wanted) => return Ok(Outcome::NeedsEntrypoints(wanted)),
        };
        self.check_mount_conflicts(&chosen, &containers, &dirs)?;

        let mut taken_containers: BTreeSet<Cow<'_, str>> = self
            .spec
            .containers
            .iter()
            .chain(self.spec.init_containers.iter().flatten())
            .map(|c| Cow::Borrowed(c.name.as_str()))
            .chain(
                self.spec
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| Cow::Borrowed(c.name.as_str())),
            )
            .collect();
        // A mount of a volume the Pod does not define is taken too: the API server validates
        // the Pod only after this webhook, and naming our volume after it would hand the
        // credentials volume, or the federation token, to a container through that mount.
        let mut taken_volumes: BTreeSet<Cow<'_, str>> = self
            .spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .chain(
                self.spec
                    .containers
                    .iter()
                    .chain(self.spec.init_containers.iter().flatten())
                    .flat_map(|c| c.volume_mounts.iter().flatten())
                    .map(|m| m.name.as_str()),
            )
            .map(Cow::Borrowed)
            .collect();
        let init_name = unique_name(INIT_CONTAINER_NAME, &mut taken_containers)?;
        let want_agent = refresh.is_some() || ann.revoke_on_exit;
        let agent_name = if want_agent {
            Some(unique_name(AGENT_CONTAINER_NAME, &mut taken_containers)?)
        } else {
            None
        };
        let volume = unique_name(VOLUME_NAME, &mut taken_volumes)?;
        let token_volume = unique_name(TOKEN_VOLUME_NAME, &mut taken_volumes)?;

        let inj = InjectionSpec {
            version: SPEC_VERSION,
            federation_url,
            federation_ca_pem: cfg.federation.ca_pem.clone(),
            token_path: TOKEN_PATH.to_owned(),
            generators: ann.generators.clone(),
            containers,
            files,
            owner: owner.spec.clone(),
            refresh,
            revoke_on_exit: ann.revoke_on_exit,
        };

        let mut ops: Vec<Op<'_>> = Vec::new();
        // 1. Chosen containers, by their original indexes (before anything is inserted).
        for c in &chosen {
            // `/spec/containers/<index>/`, then the field (no `format!` per operation).
            let mut base = String::with_capacity(c.list.len() + 8);
            base.push_str(c.list);
            base.push('/');
            base.push_str(&c.index.to_string());
            base.push('/');
            let at = |field: &str| -> Path {
                let mut p = String::with_capacity(base.len() + field.len());
                p.push_str(&base);
                p.push_str(field);
                Cow::Owned(p)
            };
            if let Some(cmd) = commands.get(c.container.name.as_str()) {
                let value = Val::Command(cmd);
                if c.container.command.is_some() {
                    ops.push(Op::Replace {
                        path: at("command"),
                        value,
                    });
                } else {
                    ops.push(add(at("command"), value));
                }
            }
            let mut mounts = Vec::new();
            if inj
                .containers
                .get(&c.container.name)
                .is_some_and(ContainerSpec::wants_env)
            {
                mounts.push(Mount {
                    name: &volume,
                    mount_path: MOUNT_PATH,
                    sub_path: None,
                    read_only: Some(true),
                });
            }
            for (dir, key) in &dirs {
                mounts.push(Mount {
                    name: &volume,
                    mount_path: dir,
                    sub_path: Some(format!("{FILES_DIR}/{key}")),
                    read_only: Some(true),
                });
            }
            if mounts.is_empty() {
                continue;
            }
            match &c.container.volume_mounts {
                Some(_) => {
                    for m in mounts {
                        ops.push(add(at("volumeMounts/-"), Val::Mount(m)));
                    }
                }
                None => ops.push(add(at("volumeMounts"), Val::Mounts(mounts))),
            }
        }

        // 2. The esi-cli containers.
        let spec = string_literal(&inj).map_err(|e| {
            Denial(format!(
                "esi: internal error serializing the injection spec ({e}); the Pod was not admitted"
            ))
        })?;
        // The escaped literal is never shorter than the env value, so the exact (second)
        // serialization runs only for the rare Pod near the limit.
        if spec.len() > limits::MAX_SPEC_BYTES {
            let size = inj.to_json().len();
            if size > limits::MAX_SPEC_BYTES {
                return deny(format!(
                    "esi: the injection spec esi-cli receives in {ENV_SPEC} would be {size} bytes, over the limit of {} \
                     (one env var cannot exceed 128 KiB, or the container fails to start); use fewer or smaller \
                     templates ({ANN_TEMPLATE_PREFIX}<name>) or file outputs",
                    limits::MAX_SPEC_BYTES
                ));
            }
        }
        let mut new_inits = vec![self.cli_container(
            &init_name,
            "init",
            &volume,
            &token_volume,
            &owner,
            None,
            &inj.federation_url,
            &resources,
        )];
        if let Some(agent) = &agent_name {
            new_inits.push(self.cli_container(
                agent,
                "refresh",
                &volume,
                &token_volume,
                &owner,
                Some("Always"),
                &inj.federation_url,
                &resources,
            ));
        }
        let first =
            cfg.init_container_position == InitPosition::First || !ann.init_containers.is_empty();
        match &self.spec.init_containers {
            None => ops.push(add("/spec/initContainers", Val::Containers(new_inits))),
            Some(_) if first => {
                for (i, c) in new_inits.into_iter().enumerate() {
                    ops.push(add(
                        format!("/spec/initContainers/{i}"),
                        Val::Container(Box::new(c)),
                    ));
                }
            }
            Some(_) => {
                for c in new_inits {
                    ops.push(add("/spec/initContainers/-", Val::Container(Box::new(c))));
                }
            }
        }

        // 3. Volumes.
        let new_volumes = vec![
            Volume::EmptyDir {
                name: &volume,
                empty_dir: EmptyDir {
                    medium: "Memory",
                    size_limit: VOLUME_SIZE_LIMIT,
                },
            },
            Volume::Projected {
                name: &token_volume,
                projected: Projected {
                    sources: [TokenSource {
                        service_account_token: ServiceAccountToken {
                            audience: &audience,
                            expiration_seconds: expiration,
                            path: TOKEN_FILE_NAME,
                        },
                    }],
                },
            },
        ];
        match &self.spec.volumes {
            None => ops.push(add("/spec/volumes", Val::Volumes(new_volumes))),
            Some(_) => {
                for v in new_volumes {
                    ops.push(add("/spec/volumes/-", Val::Volume(v)));
                }
            }
        }

        // 4. The idempotency mark.
        match &self.pod.metadata.annotations {
            None => ops.push(add(
                "/metadata/annotations",
                Val::Annotations([(ANN_STATUS, STATUS_INJECTED)].into()),
            )),
            Some(_) => ops.push(add(STATUS_PATH, Val::Str(STATUS_INJECTED))),
        }

        let patch = JsonPatch::new(&ops, &spec).map_err(|e| {
            Denial(format!(
                "esi: internal error serializing the patch ({e}); the Pod was not admitted"
            ))
        })?;
        drop(ops);
        Ok(Outcome::Patch {
            patch,
            spec: Box::new(inj),
            warnings: self.warnings,
        })
    }

    fn federation_url(&self) -> Result<String, Denial> {
        let cfg = &self.cfg.federation;
        let url = match &self.ann.federation_url {
            Some(u) => {
                if !self.cfg.url_allowed(u) {
                    // The annotation may hold 16 KiB of URL: shown whole, it would push the
                    // reason out of the (capped) message.
                    let shown = esi_api::json::prefix_at_char_boundary(u, 256);
                    let cut = if shown.len() < u.len() { "…" } else { "" };
                    return deny(format!(
                        "esi: annotation {ANN_FEDERATION_URL}: {shown}{cut} is not on the webhook's allow-list \
                         (ask the cluster admin to add it to federation.allowedUrls)"
                    ));
                }
                u.clone()
            }
            None => match &cfg.default_url {
                Some(u) => u.trim_end_matches('/').to_owned(),
                None => {
                    return deny(format!(
                        "esi: annotation {ANN_FEDERATION_URL}: required, the webhook has no default federation URL"
                    ));
                }
            },
        };
        if url.starts_with("http://") && !cfg.allow_http {
            return deny(format!(
                "esi: annotation {ANN_FEDERATION_URL}: {url} is not https"
            ));
        }
        Ok(url)
    }

    fn choose_containers(&self) -> Result<Vec<Chosen<'a>>, Denial> {
        let spec = self.spec;
        let mut out = Vec::new();
        let list_names = |cs: &[Container]| {
            cs.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.ann.containers {
            Some(names) => {
                for n in names {
                    let Some(index) = spec.containers.iter().position(|c| &c.name == n) else {
                        return deny(format!(
                            "esi: annotation {ANN_CONTAINERS}: the Pod has no container {n} (containers: {})",
                            list_names(&spec.containers)
                        ));
                    };
                    out.push(Chosen {
                        container: &spec.containers[index],
                        list: "/spec/containers",
                        index,
                    });
                }
            }
            None => {
                for (index, container) in spec.containers.iter().enumerate() {
                    out.push(Chosen {
                        container,
                        list: "/spec/containers",
                        index,
                    });
                }
            }
        }
        let inits: &[Container] = spec.init_containers.as_deref().unwrap_or_default();
        for n in &self.ann.init_containers {
            let Some(index) = inits.iter().position(|c| &c.name == n) else {
                return deny(format!(
                    "esi: annotation {ANN_INIT_CONTAINERS}: the Pod has no init container {n} (init containers: {})",
                    if inits.is_empty() {
                        "none".to_owned()
                    } else {
                        list_names(inits)
                    }
                ));
            };
            out.push(Chosen {
                container: &inits[index],
                list: "/spec/initContainers",
                index,
            });
        }
        if out.is_empty() {
            return deny("esi: the Pod has no containers");
        }
        Ok(out)
    }

    fn check_per_container_annotations(&self, chosen: &BTreeSet<&str>) -> Result<(), Denial> {
        let ann = self.ann;
        let keyed = ann
            .env_per_container
            .keys()
            .map(|c| (format!("{ANN_ENV}.{c}"), c))
            .chain(
                ann.env_from_per_container
                    .keys()
                    .map(|c| (format!("{ANN_ENV_FROM}.{c}"), c)),
            )
            .chain(
                ann.entrypoints
                    .keys()
                    .map(|c| (format!("{ANN_ENTRYPOINT_PREFIX}{c}"), c)),
            );
        for (key, c) in keyed {
            if !chosen.contains(c.as_str()) {
                return deny(format!(
                    "esi: annotation {key}: {c} is not one of the containers that get credentials ({})",
                    chosen.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_aliases(&mut self) -> Result<(), Denial> {
        let ann = self.ann;
        let mut used: BTreeSet<String> = BTreeSet::new();
        // `key` names the annotation for the message; it is only formatted when one is written.
        let mut check = |key: std::fmt::Arguments<'_>, alias: &str| -> Result<(), Denial> {
            if !ann.generators.contains_key(alias) {
                return deny(format!(
                    "esi: annotation {key}: alias {alias} is not defined in {ANN_GENERATORS} (defined: {})",
                    ann.generators
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !used.contains(alias) {
                used.insert(alias.to_owned());
            }
            Ok(())
        };
        for m in &ann.env {
            check(format_args!("{ANN_ENV}"), &m.alias)?;
        }
        for (c, ms) in &ann.env_per_container {
            for m in ms {
                check(format_args!("{ANN_ENV}.{c}"), &m.alias)?;
            }
        }
        for i in &ann.env_from {
            check(format_args!("{ANN_ENV_FROM}"), &i.alias)?;
        }
        for (c, is) in &ann.env_from_per_container {
            for i in is {
                check(format_args!("{ANN_ENV_FROM}.{c}"), &i.alias)?;
            }
        }
        for (name, f) in &ann.files {
            for alias in f.content.aliases() {
                check(format_args!("{ANN_FILE_PREFIX}{name}"), &alias)?;
            }
        }
        for alias in ann.generators.keys() {
            if !used.contains(alias) {
                self.warnings.push(format!(
                    "esi: generator alias {alias} is not used by any env var or file; it is still fetched"
                ));
            }
        }
        Ok(())
    }

    fn container_specs(&self, chosen: &[Chosen<'_>]) -> BTreeMap<String, ContainerSpec> {
        let ann = self.ann;
        chosen
            .iter()
            .map(|c| {
                let name = &c.container.name;
                let mut env = ann.env.clone();
                for m in ann.env_per_container.get(name).into_iter().flatten() {
                    // The container's own mapping wins over the Pod-wide one.
                    env.retain(|e| e.name != m.name);
                    env.push(m.clone());
                }
                let mut env_from = ann.env_from.clone();
                env_from.extend(
                    ann.env_from_per_container
                        .get(name)
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
                (name.clone(), ContainerSpec { env, env_from })
            })
            .collect()
    }

    fn owner(&self, chosen: &[Chosen<'_>]) -> Result<ResolvedOwner, Denial> {
        let pod_sc = self.spec.security_context.as_ref();
        // Kubernetes accepts ids 0..=2^31-1; one beyond would reach the esi-cli containers.
        let to_u32 = |v: i64, what: &str| -> Result<u32, Denial> {
            u32::try_from(v)
                .ok()
                .filter(|id| *id <= contract::MAX_ID)
                .ok_or_else(|| Denial(format!("esi: {what} {v} is not a valid id")))
        };
        let (uid, gid) = if let Some(o) = &self.ann.run_as {
            (o.uid, o.gid)
        } else {
            let mut uids = BTreeSet::new();
            let mut gids = BTreeSet::new();
            let mut all_uids_known = true;
            let mut all_gids_known = true;
            for c in chosen {
                let sc = c.container.security_context.as_ref();
                match sc
                    .and_then(|s| s.run_as_user)
                    .or(pod_sc.and_then(|s| s.run_as_user))
                {
                    Some(u) => {
                        uids.insert(to_u32(u, "runAsUser")?);
                    }
                    None => all_uids_known = false,
                }
                match sc
                    .and_then(|s| s.run_as_group)
                    .or(pod_sc.and_then(|s| s.run_as_group))
                {
                    Some(g) => {
                        gids.insert(to_u32(g, "runAsGroup")?);
                    }
                    None => all_gids_known = false,
                }
            }
            let uid = if all_uids_known && uids.len() == 1 {
                uids.into_iter().next()
            } else {
                None
            };
            let fs_group = pod_sc
                .and_then(|s| s.fs_group)
                .map(|g| to_u32(g, "fsGroup"))
                .transpose()?;
            let common_gid = if all_gids_known && gids.len() == 1 {
                gids.into_iter().next()
            } else {
                None
            };
            (uid, fs_group.or(common_gid))
        };
        let resolved = match (uid, gid) {
            // esi-cli never runs as root, so it cannot give files to uid 0. A root app reads
            // them anyway through CAP_DAC_OVERRIDE (granted by default), but not once it drops
            // ALL capabilities. So esi-cli runs in the app's group (runAsGroup/fsGroup, else 0:
            // a root process without runAsGroup runs in group 0 in practically every image) and
            // files default to 0440: the group bit serves a root app with or without
            // capabilities. Only the chosen containers and esi-cli mount the volume, so the
            // group bit opens the files to nobody else.
            (Some(0), g) => {
                let gid = g.unwrap_or(0);
                ResolvedOwner {
                    spec: Owner {
                        uid: Some(0),
                        gid: Some(gid),
                    },
                    run_as_user: DEFAULT_UID,
                    run_as_group: gid,
                    default_mode: 0o440,
                    uid_known: true,
                }
            }
            (Some(u), g) => ResolvedOwner {
                spec: Owner {
                    uid: Some(u),
                    gid: g,
                },
                run_as_user: u,
                run_as_group: g.unwrap_or(u),
                default_mode: 0o400,
                uid_known: true,
            },
            (None, Some(g)) => ResolvedOwner {
                spec: Owner {
                    uid: None,
                    gid: Some(g),
                },
                run_as_user: DEFAULT_UID,
                run_as_group: g,
                default_mode: 0o440,
                uid_known: false,
            },
            (None, None) => {
                let names: Vec<&str> = chosen.iter().map(|c| c.container.name.as_str()).collect();
                return deny(format!(
                    "esi: cannot tell which user runs the containers that get credentials ({}), so esi-cli cannot \
                     make the credentials readable to them and nobody else; set securityContext.runAsUser (on the Pod or the \
                     containers, all the same), or securityContext.fsGroup on the Pod, or the annotation \
                     {ANN_RUN_AS}: \"uid[:gid]\"",
                    names.join(", ")
                ));
            }
        };
        Ok(resolved)
    }

    /// File outputs, and the directories to mount (directory → key under `files/`).
    fn files(
        &self,
        owner: &ResolvedOwner,
    ) -> Result<(Vec<FileOutput>, BTreeMap<String, String>), Denial> {
        let mut outs = Vec::new();
        let mut dirs: BTreeMap<String, String> = BTreeMap::new();
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, f) in &self.ann.files {
            let key = format!("{ANN_FILE_PREFIX}{name}");
            if let Some(other) = paths.insert(f.path.as_str(), name.as_str()) {
                return deny(format!(
                    "esi: annotation {key}: path {} is also used by {ANN_FILE_PREFIX}{other}",
                    f.path
                ));
            }
            let (dir, file) = f.path.rsplit_once('/').unwrap_or(("", &f.path));
            let dir = if dir.is_empty() { "/" } else { dir };
            if FORBIDDEN_DIRS.contains(&dir) {
                return deny(format!(
                    "esi: annotation {key}: the directory {dir} would be replaced by the credentials volume, hiding \
                     the image's files; use a dedicated directory such as /etc/esi/{name} or /var/run/secrets/{name}"
                ));
            }
            if path_within(dir, MOUNT_PATH) {
                return deny(format!(
                    "esi: annotation {key}: {MOUNT_PATH} is reserved for esi-cli; choose another directory"
                ));
            }
            let dir_key = dirs
                .entry(dir.to_owned())
                .or_insert_with(|| name.clone())
                .clone();
            let mode = f.mode.unwrap_or(owner.default_mode);
            if !owner.uid_known && mode & 0o040 == 0 {
                return deny(format!(
                    "esi: annotation {key}: mode {mode:04o} is owner-only but the app's uid is unknown (only its \
                     group); use a group-readable mode such as 0440 or set runAsUser"
                ));
            }
            outs.push(FileOutput {
                name: name.clone(),
                path: f.path.clone(),
                volume_path: format!("{FILES_DIR}/{dir_key}/{file}"),
                content: f.content.clone(),
                mode,
            });
        }
        let dir_list: Vec<&String> = dirs.keys().collect();
        for a in &dir_list {
            for b in &dir_list {
                if a != b && path_within(b, a) {
                    return deny(format!(
                        "esi: file outputs use the nested directories {a} and {b}; put them in one directory or in \
                         separate ones"
                    ));
                }
            }
        }
        Ok((outs, dirs))
    }

    fn token(&self) -> Result<(String, i64), Denial> {
        let t = &self.cfg.token;
        let audience = self
            .ann
            .token_audience
            .clone()
            .unwrap_or_else(|| t.audience.clone());
        if !self.cfg.audience_allowed(&audience) {
            return deny(format!(
                "esi: annotation {ANN_TOKEN_AUDIENCE}: audience {audience} is not allowed by the webhook (allowed: {})",
                std::iter::once(&t.audience)
                    .chain(&t.allowed_audiences)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let exp = self
            .ann
            .token_expiration_seconds
            .unwrap_or(t.expiration_seconds);
        if !(t.min_expiration_seconds..=t.max_expiration_seconds).contains(&exp) {
            return deny(format!(
                "esi: annotation {ANN_TOKEN_EXPIRATION}: {exp}s is outside the allowed {}s..{}s",
                t.min_expiration_seconds, t.max_expiration_seconds
            ));
        }
        Ok((audience, exp))
    }

    fn refresh(&self) -> Result<Option<RefreshSpec>, Denial> {
        let ann = self.ann;
        if !ann.refresh {
            if ann.refresh_at_percent.is_some() {
                return deny(format!(
                    "esi: annotation {ANN_REFRESH_AT}: has no effect without {ANN_REFRESH}: \"true\""
                ));
            }
            if ann.refresh_notify.is_some() {
                return deny(format!(
                    "esi: annotation {ANN_REFRESH_NOTIFY}: has no effect without {ANN_REFRESH}: \"true\""
                ));
            }
            return Ok(None);
        }
        if ann.files.is_empty() {
            return deny(format!(
                "esi: annotation {ANN_REFRESH}: refresh re-issues file outputs and this Pod declares none (env vars \
                 cannot change inside a running process); add {ANN_FILE_PREFIX}<name> or remove {ANN_REFRESH}"
            ));
        }
        let notify = ann.refresh_notify.clone().unwrap_or(Notify::None);
        if matches!(notify, Notify::Signal { .. })
            && self.spec.share_process_namespace != Some(true)
        {
            return deny(format!(
                "esi: annotation {ANN_REFRESH_NOTIFY}: signalling the app needs spec.shareProcessNamespace: true"
            ));
        }
        Ok(Some(RefreshSpec {
            at_percent: ann
                .refresh_at_percent
                .unwrap_or(contract::DEFAULT_REFRESH_AT_PERCENT),
            notify,
        }))
    }

    /// The wrapped command of each container that gets env vars; or, with `entrypointLookup`
    /// on, the containers whose entrypoints must be read from their images first.
    #[allow(clippy::type_complexity)]
    fn commands(
        &self,
        chosen: &[Chosen<'a>],
        specs: &BTreeMap<String, ContainerSpec>,
    ) -> Result<Result<BTreeMap<&'a str, Vec<&'a str>>, Vec<EntrypointWanted>>, Denial> {
        let mut out = BTreeMap::new();
        let mut wanted = Vec::new();
        for c in chosen {
            let name = c.container.name.as_str();
            let wants_env = specs.get(name).is_some_and(ContainerSpec::wants_env);
            let entry_key = format_args!("{ANN_ENTRYPOINT_PREFIX}{name}");
            let override_ = self.ann.entrypoints.get(name);
            let original: &'a [String] = match (&c.container.command, override_) {
                (Some(cmd), None) if !cmd.is_empty() => cmd,
                (Some(cmd), Some(_)) if !cmd.is_empty() => {
                    return deny(format!(
                        "esi: annotation {entry_key}: container {name} already has a command; remove the annotation"
                    ));
                }
                (_, Some(ep)) => {
                    if !wants_env {
                        return deny(format!(
                            "esi: annotation {entry_key}: container {name} gets no env vars, so its command is not wrapped"
                        ));
                    }
                    ep
                }
                (_, None) => {
                    if !wants_env {
                        continue;
                    }
                    if let Some(found) = self.entrypoints.get(name) {
                        found
                    } else if self.cfg.entrypoint_lookup.enabled() && !c.container.image.is_empty()
                    {
                        wanted.push(EntrypointWanted {
                            container: name.to_owned(),
                            image: c.container.image.clone(),
                            sets_args: c.container.args.as_ref().is_some_and(|a| !a.is_empty()),
                        });
                        continue;
                    } else {
                        return deny(format!(
                            "esi: container {name} has no command, so esi-cli cannot wrap its entrypoint to inject env \
                         vars; set the annotation {entry_key} to the image's ENTRYPOINT (plus CMD when the Pod sets \
                         no args) as a JSON array, e.g. [\"/app/server\"], or set command in the Pod"
                        ));
                    }
                }
            };
            if !wants_env {
                continue;
            }
            if original.first().map(String::as_str) == Some(BINARY_PATH) {
                // Already wrapped (a Pod copied from an injected one): wrapping twice would
                // make esi-cli exec itself.
                continue;
            }
            let mut cmd = Vec::with_capacity(5 + original.len());
            cmd.extend([BINARY_PATH, "exec", "--container", name, "--"]);
            cmd.extend(original.iter().map(String::as_str));
            out.insert(name, cmd);
        }
        if !wanted.is_empty() {
            return Ok(Err(wanted));
        }
        Ok(Ok(out))
    }

    fn check_mount_conflicts(
        &self,
        chosen: &[Chosen<'_>],
        specs: &BTreeMap<String, ContainerSpec>,
        dirs: &BTreeMap<String, String>,
    ) -> Result<(), Denial> {
        for c in chosen {
            let name = &c.container.name;
            let mut ours: Vec<&str> = dirs.keys().map(String::as_str).collect();
            if specs.get(name).is_some_and(ContainerSpec::wants_env) {
                ours.push(MOUNT_PATH);
            }
            for m in c.container.volume_mounts.iter().flatten() {
                let theirs = m.mount_path.trim_end_matches('/');
                let theirs = if theirs.is_empty() { "/" } else { theirs };
                for our in &ours {
                    let hides = path_within(theirs, our);
                    let inside_read_only = path_within(our, theirs) && m.read_only == Some(true);
                    if hides || inside_read_only {
                        return deny(format!(
                            "esi: container {name}: esi needs to mount {our}, which conflicts with its volumeMount \
                             {} (volume {}); move the file output or that mount",
                            m.mount_path, m.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The esi-cli containers' requests and limits: the webhook's, each overridden by
    /// `esi.dev/cli-resources`. A request above its limit is refused here, naming the
    /// annotation, rather than by the API server after the webhook.
    fn cli_resources(&self) -> Result<(Cow<'a, ResourceMap>, Cow<'a, ResourceMap>), Denial> {
        let cli = &self.cfg.cli;
        let own = &self.ann.cli_resources;
        if own.is_empty() {
            return Ok((Cow::Borrowed(&cli.requests), Cow::Borrowed(&cli.limits)));
        }
        let over = |base: &ResourceMap, own: &ResourceMap| {
            let mut merged = base.clone();
            merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged
        };
        let (requests, limits) = (
            over(&cli.requests, &own.requests),
            over(&cli.limits, &own.limits),
        );
        let whose = |own: &ResourceMap, resource: &str| {
            if own.contains_key(resource) {
                ""
            } else {
                " (the webhook's default)"
            }
        };
        if let Some(resource) = request_above_limit(&requests, &limits) {
            return deny(format!(
                "esi: annotation {ANN_CLI_RESOURCES}: requests.{resource} {}{} is more than \
                 limits.{resource} {}{}, which the API server refuses",
                requests[resource],
                whose(&own.requests, resource),
                limits[resource],
                whose(&own.limits, resource),
            ));
        }
        Ok((Cow::Owned(requests), Cow::Owned(limits)))
    }

    #[allow(clippy::too_many_arguments)]
    fn cli_container<'c>(
        &'c self,
        name: &'c str,
        subcommand: &'c str,
        volume: &'c str,
        token_volume: &'c str,
        owner: &ResolvedOwner,
        restart_policy: Option<&'c str>,
        federation_url: &str,
        resources: &'c (Cow<'a, ResourceMap>, Cow<'a, ResourceMap>),
    ) -> CliContainer<'c> {
        let cli = &self.cfg.cli;
        let field = |name, field_path| EnvVar {
            name,
            value: None,
            value_from: Some(FieldRef {
                field_ref: FieldPath { field_path },
            }),
        };
        let mut env = vec![
            EnvVar {
                name: ENV_SPEC,
                value: Some(EnvValue::Spec),
                value_from: None,
            },
            field(ENV_POD_NAME, "metadata.name"),
            field(ENV_POD_NAMESPACE, "metadata.namespace"),
        ];
        // esi-cli refuses plain HTTP unless told; the webhook allowed this URL on purpose.
        if federation_url.starts_with("http://") {
            env.push(EnvVar {
                name: ENV_ALLOW_HTTP,
                value: Some(EnvValue::Text("true")),
                value_from: None,
            });
        }
        CliContainer {
            name,
            image: &cli.image,
            image_pull_policy: &cli.image_pull_policy,
            command: [&cli.binary_path],
            args: [subcommand],
            env,
            volume_mounts: [
                Mount {
                    name: volume,
                    mount_path: MOUNT_PATH,
                    sub_path: None,
                    read_only: None,
                },
                Mount {
                    name: token_volume,
                    mount_path: TOKEN_MOUNT_PATH,
                    sub_path: None,
                    read_only: Some(true),
                },
            ],
            resources: Resources {
                requests: &resources.0,
                limits: &resources.1,
            },
            security_context: SecurityContext {
                run_as_user: owner.run_as_user,
                run_as_group: owner.run_as_group,
                run_as_non_root: true,
                read_only_root_filesystem: true,
                allow_privilege_escalation: false,
                privileged: false,
                capabilities: Capabilities { drop: ["ALL"] },
                seccomp_profile: SeccompProfile {
                    kind: "RuntimeDefault",
                },
            },
            termination_message_policy: "FallbackToLogsOnError",
            restart_policy,
            // A native sidecar's startupProbe holds the app containers back until it passes:
            // the app starts only once the refresher has taken over the credentials.
            startup_probe: restart_policy.map(|_| Probe {
                exec: Exec {
                    command: [&cli.binary_path, "ready"],
                },
                period_seconds: 1,
                failure_threshold: 120,
            }),
        }
    }
}

/// Who esi-cli runs as, and the default file mode that makes files readable by the app only.
struct ResolvedOwner {
    spec: Owner,
    run_as_user: u32,
    run_as_group: u32,
    default_mode: u32,
    uid_known: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_path_escapes_the_annotation_name() {
        let escaped =
            json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "annotations", ANN_STATUS]);
        assert_eq!(STATUS_PATH, escaped.as_str());
    }
}
