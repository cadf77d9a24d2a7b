//! Configuration: Kubernetes-style manifests read from a file or a folder, validated, and
//! compiled into an immutable [`Snapshot`] that requests read through an `ArcSwap`.
//!
//! Every problem is reported with the file (and document index), the resource and the field
//! at fault, and all problems of a load are reported together. A reload that fails leaves the
//! previous snapshot serving (see [`crate::state`]).

mod fast;
pub mod resources;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use compact_str::CompactString;
use esi_api::inject::{is_dns_label, is_dns_subdomain};
use esi_backends::{Generator, GeneratorKind, GeneratorSpec, SecretStoreSpec};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::authz::{self, Authorizer};
use crate::lookup::LookupMap;
use crate::state::AppState;
use crate::token::jwks::{Location, SourceKey, check_url_scheme};
use crate::token::keys::KeyRing;
use crate::token::{ClusterKeys, ClusterVerifier, Leeways};
use resources::{Algorithm, AlgorithmSet, AuthorizationSpec, ClusterSpec, parse_duration};

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file.yaml#2` (document index from 1), or `file.yaml` for whole-file problems.
    pub origin: String,
    /// `Kind/namespace/name`, or empty when the document could not be identified.
    pub resource: String,
    /// Field path (`spec.audiences`), or empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

// Escaped, as resource names are: a field path and a message may quote a key of the
// manifest (`unknown field`, `tags.<key>`), and a key holding a line break must not forge a
// log line.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", printable(&self.origin))?;
        if !self.resource.is_empty() {
            write!(f, ": {}", printable(&self.resource))?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", printable(&self.field))?;
        }
        write!(f, ": {}", printable(&self.message))
    }
}

/// All problems of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub Vec<ConfigError>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problem{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub(crate) fn one(origin: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError(vec![ConfigError {
            origin: origin.into(),
            resource: String::new(),
            field: String::new(),
            message: message.into(),
        }])
    }
}

/// One YAML document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `file#index`.
    pub origin: String,
    /// The document.
    pub value: serde_json::Value,
}

/// Reads a file, or every `*.yaml`/`*.yml`/`*.json` file of a folder (recursively, sorted,
/// skipping hidden entries such as a ConfigMap's `..data`), into documents.
pub fn read_documents(path: &Path) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    read_each(path, &mut |doc| docs.push(doc))?;
    Ok(docs)
}

/// [`read_documents`], handing each file's documents to `each` as the file is read. On an
/// error, the documents handed over are of a configuration that does not load.
fn read_each(path: &Path, each: &mut dyn FnMut(Document)) -> Result<(), LoadError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| LoadError::one(path.display().to_string(), format!("cannot read: {e}")))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files, 0)
            .map_err(|e| LoadError::one(path.display().to_string(), format!("cannot list: {e}")))?;
        files.sort();
        if files.is_empty() {
            return Err(LoadError::one(
                path.display().to_string(),
                "folder holds no .yaml, .yml or .json file",
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut errors = Vec::new();
    for file in files {
        let origin = file.display().to_string();
        match std::fs::metadata(&file) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                errors.push(ConfigError {
                    origin,
                    resource: String::new(),
                    field: String::new(),
                    message: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
                continue;
            }
            Err(e) => {
                errors.push(ConfigError {
                    origin,
                    resource: String::new(),
                    field: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if let Err(e) = parse_text_each(&origin, &text, each) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(ConfigError {
                origin,
                resource: String::new(),
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LoadError(errors))
    }
}

/// How deep [`read_documents`] and [`crate::state::fingerprint`] go into folders. Links are
/// followed (a ConfigMap's files are links), so two links to `.` would otherwise make a walk
/// that never ends.
pub const MAX_FOLDER_DEPTH: usize = 16;

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
    if depth > MAX_FOLDER_DEPTH {
        return Err(std::io::Error::other(format!(
            "{} is more than {MAX_FOLDER_DEPTH} folders deep (a link to a parent folder?)",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(&path, out, depth + 1)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// YAML limits sized for configuration: serde-saphyr's defaults (1,024 documents, 250,000
/// nodes) protect against document storms but refuse a real multi-cluster configuration (10,000
/// generators in one file); the file size cap ([`MAX_FILE_BYTES`]) bounds the work instead.
/// The nesting limit stays serde-saphyr's (64), which the fast readers follow too.
fn yaml_budget() -> serde_saphyr::budget::Budget {
    // Non-exhaustive: start from the defaults and set fields.
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 20_000_000;
    budget.max_events = 80_000_000;
    budget
}

fn yaml_options() -> serde_saphyr::Options {
    // Non-exhaustive: start from the defaults and set fields.
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(yaml_budget());
    // The snippet quotes the lines around the fault, and they may hold a secret (a Fake's
    // data, a token written inline where a reference belongs) that then reaches a log; the
    // line and column say where to look.
    options.with_snippet = false;
    options
}

/// Parses multi-document YAML text (JSON is YAML) into documents, skipping empty ones and
/// flattening `kind: List`. Faster readers go first where they read what serde-saphyr reads
/// (see the `fast` module); serde-saphyr reads the rest and explains errors.
pub fn parse_text(origin: &str, text: &str) -> Result<Vec<Document>, ConfigError> {
    let mut docs = Vec::new();
    parse_text_each(origin, text, &mut |doc| docs.push(doc))?;
    Ok(docs)
}

/// [`parse_text`], handing each document to `each` as soon as it is read: neither a large
/// YAML file nor a List written as JSON (the form the Terraform modules render) is ever held
/// whole as values. On an error, documents already handed over are of a file that does not
/// load.
fn parse_text_each(
    origin: &str,
    text: &str,
    each: &mut dyn FnMut(Document),
) -> Result<(), ConfigError> {
    match fast::json_document(text) {
        Some(fast::Json::List(items)) => {
            let mut read = 0;
            for item in &items {
                let Some(value) = fast::json_list_item(item) else {
                    break;
                };
                each(Document {
                    origin: format!("{origin}#1.items[{read}]"),
                    value,
                });
                read += 1;
            }
            if read == items.len() {
                return Ok(());
            }
            // An item the fast reader declines (a duplicate key, nesting too deep): the YAML
            // readers explain what is wrong with the file. The items before it read as they do,
            // so should they read the file, only the rest is handed over.
            let values = match fast::yaml(text) {
                Some(values) => values,
                None => saphyr_values(origin, text)?,
            };
            flatten(origin, values, 0, read, each)
        }
        Some(fast::Json::Object(value)) => flatten(origin, vec![value], 0, 0, each),
        None => {
            let Some(mut documents) = fast::yaml_documents(text) else {
                return flatten(origin, saphyr_values(origin, text)?, 0, 0, each);
            };
            let mut read = 0;
            while let Some(document) = documents.next() {
                let Some(value) = document else {
                    // Declined from this document on: serde-saphyr reads the file (the
                    // documents before it alike) or explains what is wrong with it.
                    return flatten(origin, saphyr_values(origin, text)?, read, 0, each);
                };
                if let Err(e) = hand_over(origin, read, value, 0, each) {
                    // Reported as reading the whole file first would: serde-saphyr's error
                    // when a later document is one the fast reader declines and serde-saphyr
                    // refuses.
                    if documents.any(|d| d.is_none()) {
                        saphyr_values(origin, text)?;
                    }
                    return Err(e);
                }
                read += 1;
            }
            Ok(())
        }
    }
}

/// The documents of YAML text as serde-saphyr reads them.
fn saphyr_values(origin: &str, text: &str) -> Result<Vec<serde_json::Value>, ConfigError> {
    serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(|e| ConfigError {
        origin: origin.to_owned(),
        resource: String::new(),
        field: String::new(),
        message: format!("not valid YAML: {e}"),
    })
}

/// Hands `values` over as documents from the one numbered `from` (those before it were handed
/// over already), leaving out the first `skip_items` items of a List there too.
fn flatten(
    origin: &str,
    values: Vec<serde_json::Value>,
    from: usize,
    skip_items: usize,
    each: &mut dyn FnMut(Document),
) -> Result<(), ConfigError> {
    for (i, value) in values.into_iter().enumerate().skip(from) {
        hand_over(
            origin,
            i,
            value,
            if i == from { skip_items } else { 0 },
            each,
        )?;
    }
    Ok(())
}

/// Hands the document numbered `index` over: a null one left out, a List as its items one by
/// one (the first `skip_items` left out: already handed over).
fn hand_over(
    origin: &str,
    index: usize,
    value: serde_json::Value,
    skip_items: usize,
    each: &mut dyn FnMut(Document),
) -> Result<(), ConfigError> {
    let origin = format!("{origin}#{}", index + 1);
    match value {
        serde_json::Value::Null => {}
        serde_json::Value::Object(mut o)
            if o.get("kind").and_then(|k| k.as_str()) == Some("List") =>
        {
            // Moved out, not cloned: a List is usually the whole configuration.
            let items = match o.remove("items") {
                Some(serde_json::Value::Array(items)) => items,
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(ConfigError {
                        origin,
                        resource: String::new(),
                        field: "items".to_owned(),
                        message: "a List's items must be a sequence of manifests".to_owned(),
                    });
                }
            };
            for (j, item) in items.into_iter().enumerate().skip(skip_items) {
                each(Document {
                    origin: format!("{origin}.items[{j}]"),
                    value: item,
                });
            }
        }
        value => each(Document { origin, value }),
    }
    Ok(())
}

/// A manifest's envelope. `spec` is only checked for presence here: it is moved out of the
/// document afterwards and read by its kind's type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    #[allow(dead_code)]
    spec: serde::de::IgnoredAny,
    // Accepted so that `kubectl get -o yaml` output loads; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

// The rest of Kubernetes' ObjectMeta (uid, resourceVersion, managedFields, ...) is accepted
// for the same reason, and ignored; anything else is refused, so that a misspelt `namespce`
// does not quietly put a resource in `default`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    generate_name: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    self_link: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    uid: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    resource_version: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    generation: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    creation_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    owner_references: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    finalizers: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    managed_fields: Option<serde::de::IgnoredAny>,
}

/// A registered cluster as read from its manifest.
#[derive(Debug, Clone)]
pub struct ClusterResource {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Spec.
    pub spec: ClusterSpec,
    /// Where it was read.
    pub origin: String,
}

/// Typed, validated resources, before compilation.
#[derive(Debug, Default)]
pub struct Resources {
    /// Clusters, sorted by name.
    pub clusters: Vec<ClusterResource>,
    /// Authorizations by name.
    pub authorizations: BTreeMap<String, (AuthorizationSpec, String)>,
    /// SecretStores by `(namespace, name)`.
    pub stores: BTreeMap<(String, String), (SecretStoreSpec, String)>,
    /// Generators by `namespace/kind/name`.
    pub generators: BTreeMap<String, (GeneratorSpec, String)>,
}

/// Default namespace of namespaced resources read from files.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses and validates documents into resources, collecting every problem; fails when there
/// is any (file mode: a configuration is loaded whole or not at all).
pub fn parse_resources(docs: Vec<Document>) -> Result<Resources, LoadError> {
    let (res, errors) = parse_resources_lenient(docs);
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(LoadError(errors))
    }
}

/// Parses and validates documents, keeping every valid resource and reporting the others
/// (Kubernetes mode: one bad resource must not take the rest down). A generator whose store is
/// missing and a cluster whose key source collides with another's are left out too.
pub fn parse_resources_lenient(docs: Vec<Document>) -> (Resources, Vec<ConfigError>) {
    let mut reader = ResourceReader::default();
    for doc in docs {
        reader.add(doc);
    }
    reader.finish()
}

/// Documents read into resources one at a time, so that a large configuration is never held
/// whole as values ([`load_path`] hands each file's documents over as the file is read).
#[derive(Default)]
struct ResourceReader {
    res: Resources,
    errors: Vec<ConfigError>,
}

fn push_error(errors: &mut Vec<ConfigError>) -> impl FnMut(&str, &str, &str, String) + '_ {
    |origin: &str, resource: &str, field: &str, message: String| {
        errors.push(ConfigError {
            origin: origin.to_owned(),
            resource: resource.to_owned(),
            field: field.to_owned(),
            message,
        });
    }
}

impl ResourceReader {
    /// Reads one document into a resource, or into the reasons it is not one.
    fn add(&mut self, doc: Document) {
        let res = &mut self.res;
        let mut err = push_error(&mut self.errors);
        let origin = doc.origin;
        if !doc.value.is_object() {
            err(
                &origin,
                "",
                "",
                "document is not a mapping (expected apiVersion, kind, metadata, spec)".to_owned(),
            );
            return;
        }
        let m: Manifest = match esi_backends::deserialize_tracked(&doc.value) {
            Ok(m) => m,
            Err(e) => {
                let path = e.path().to_string();
                err(
                    &origin,
                    "",
                    if path == "." { "" } else { &path },
                    esi_api::json::without_values(&e.into_inner().to_string()),
                );
                return;
            }
        };
        let spec = match doc.value {
            serde_json::Value::Object(mut map) => map.remove("spec").unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let Manifest {
            api_version,
            kind,
            metadata,
            ..
        } = m;
        let namespaced = kind != "Cluster" && kind != "Authorization";
        let namespace = metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        // Shown in messages before the names are validated: escaped, so that a name holding a
        // line break cannot forge a log line.
        let resource = if namespaced {
            format!(
                "{}/{}/{}",
                printable(&kind),
                printable(&namespace),
                printable(&metadata.name)
            )
        } else {
            format!("{}/{}", printable(&kind), printable(&metadata.name))
        };
        if api_version != esi_api::API_GROUP_VERSION {
            err(
                &origin,
                &resource,
                "apiVersion",
                format!("{api_version:?} is not {:?}", esi_api::API_GROUP_VERSION),
            );
            return;
        }
        if !is_dns_subdomain(&metadata.name) {
            err(
                &origin,
                &resource,
                "metadata.name",
                format!("{:?} is not a lowercase RFC 1123 name", metadata.name),
            );
            return;
        }
        if namespaced && !is_dns_label(&namespace) {
            err(
                &origin,
                &resource,
                "metadata.namespace",
                format!("{namespace:?} is not a lowercase RFC 1123 label"),
            );
            return;
        }
        if !namespaced && metadata.namespace.is_some() {
            err(
                &origin,
                &resource,
                "metadata.namespace",
                format!("{kind} is cluster-scoped; remove the namespace"),
            );
            return;
        }
        let duplicate = |origin_of_first: &str| {
            format!("duplicate resource (first defined at {origin_of_first})")
        };
        match kind.as_str() {
            "Cluster" => match parse_spec::<ClusterSpec>(spec) {
                Ok(spec) => {
                    if let Some(first) = res.clusters.iter().find(|c| c.name == metadata.name) {
                        err(
                            &origin,
                            &resource,
                            "metadata.name",
                            duplicate(&first.origin),
                        );
                    } else if let Err((field, message)) = validate_cluster(&spec) {
                        err(&origin, &resource, &field, message);
                    } else {
                        res.clusters.push(ClusterResource {
                            name: metadata.name,
                            labels: metadata.labels,
                            spec,
                            origin,
                        });
                    }
                }
                Err((field, message)) => err(&origin, &resource, &field, message),
            },
            "Authorization" => match parse_spec::<AuthorizationSpec>(spec) {
                Ok(spec) => {
                    if let Some((_, first)) = res.authorizations.get(&metadata.name) {
                        err(&origin, &resource, "metadata.name", duplicate(first));
                    } else if let Err((field, message)) = authz::validate(&spec) {
                        err(&origin, &resource, &field, message);
                    } else {
                        res.authorizations.insert(metadata.name, (spec, origin));
                    }
                }
                Err((field, message)) => err(&origin, &resource, &field, message),
            },
            "SecretStore" => match SecretStoreSpec::from_manifest(spec) {
                Ok(spec) => {
                    let key = (namespace, metadata.name);
                    if let Some((_, first)) = res.stores.get(&key) {
                        err(&origin, &resource, "metadata.name", duplicate(first));
                    } else {
                        res.stores.insert(key, (spec, origin));
                    }
                }
                Err(e) => err(&origin, &resource, "", e.to_string()),
            },
            other => match GeneratorKind::parse(other) {
                Some(gk) => match GeneratorSpec::from_manifest(gk, spec) {
                    Ok(spec) => {
                        let key = format!("{namespace}/{}/{}", gk.as_str(), metadata.name);
                        if let Some((_, first)) = res.generators.get(&key) {
                            err(&origin, &resource, "metadata.name", duplicate(first));
                        } else {
                            res.generators.insert(key, (spec, origin));
                        }
                    }
                    Err(e) => err(&origin, &resource, "", e.to_string()),
                },
                None => err(
                    &origin,
                    &resource,
                    "kind",
                    format!(
                        "unknown kind {other:?} (known: Cluster, Authorization, SecretStore, {})",
                        GeneratorKind::known()
                    ),
                ),
            },
        }
    }

    /// The resources read, after the checks across them, and every problem found.
    fn finish(self) -> (Resources, Vec<ConfigError>) {
        let ResourceReader {
            mut res,
            mut errors,
        } = self;
        let mut err = push_error(&mut errors);
        // Cross-resource checks.
        let mut orphans = Vec::new();
        for (key, (spec, origin)) in &res.generators {
            if let Some(store) = spec.store_ref() {
                let namespace = key.split('/').next().unwrap_or_default();
                if !res
                    .stores
                    .contains_key(&(namespace.to_owned(), store.to_owned()))
                {
                    err(
                        origin,
                        &generator_resource(key),
                        "spec.secretStoreRef",
                        format!("SecretStore {namespace}/{store} does not exist"),
                    );
                    orphans.push(key.clone());
                }
            }
        }
        for key in orphans {
            res.generators.remove(&key);
        }
        res.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let colliding = check_shared_issuers(&res.clusters, &mut err);
        res.clusters.retain(|c| !colliding.contains(&c.name));
        drop(err);
        (res, errors)
    }
}

/// `text` as written, or escaped (`\n`, `\u{1b}`) when it holds a control character.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.escape_debug().to_string().into()
    } else {
        text.into()
    }
}

fn generator_resource(key: &str) -> String {
    // key is ns/Kind/name; resources are shown as Kind/ns/name.
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(kind), Some(name)) => format!("{kind}/{ns}/{name}"),
        _ => key.to_owned(),
    }
}

fn parse_spec<T: serde::de::DeserializeOwned>(
    spec: serde_json::Value,
) -> Result<T, (String, String)> {
    if spec.is_null() {
        return Err(("spec".to_owned(), "is required".to_owned()));
    }
    esi_backends::deserialize_tracked(&spec).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." {
                "spec".to_owned()
            } else {
                format!("spec.{path}")
            },
            esi_api::json::without_values(&e.into_inner().to_string()),
        )
    })
}

/// How a cluster gets its keys, after defaults.
#[derive(Debug, Clone, PartialEq)]
enum KeyPlan {
    Discovery,
    JwksUri(String),
    Inline(serde_json::Value),
}

impl KeyPlan {
    /// Where a cluster with `spec` fetches its keys by this plan; `None` for inline keys.
    fn source(&self, spec: &ClusterSpec) -> Option<SourceKey> {
        let location = match self {
            KeyPlan::Discovery => Location::Discovery(spec.issuer.clone()),
            KeyPlan::JwksUri(uri) => Location::JwksUri(uri.clone()),
            KeyPlan::Inline(_) => return None,
        };
        Some(SourceKey {
            location,
            ca_bundle: spec.ca_bundle.clone(),
        })
    }
}

/// The sources the clusters of `res` fetch their keys from, each with the name of the first
/// cluster naming it, as compiling `res` will ask the registry for them. Clusters whose keys
/// are inline or whose spec is refused are left out, and so are those naming `own_issuer` (the
/// federation's own URL, which the compilation refuses).
pub fn remote_key_sources<'a>(
    res: &'a Resources,
    own_issuer: Option<&str>,
) -> Vec<(SourceKey, &'a str)> {
    let own = own_issuer.map(|u| u.trim_end_matches('/'));
    let mut seen = HashSet::new();
    res.clusters
        .iter()
        .filter(|c| own != Some(c.spec.issuer.trim_end_matches('/')))
        .filter_map(|c| Some((key_plan(&c.spec).ok()?.source(&c.spec)?, c.name.as_str())))
        .filter(|(key, _)| seen.insert(key.clone()))
        .collect()
}

fn key_plan(spec: &ClusterSpec) -> Result<KeyPlan, (String, String)> {
    let Some(keys) = &spec.keys else {
        return match check_url_scheme(&spec.issuer) {
            Ok(()) => Ok(KeyPlan::Discovery),
            Err(_) => Err((
                "spec.keys".to_owned(),
                format!(
                    "no way to get keys: issuer {:?} is not an https URL, so OIDC discovery is impossible; set keys.jwksUri or keys.jwks",
                    spec.issuer
                ),
            )),
        };
    };
    let set = [
        keys.discovery.is_some(),
        keys.jwks_uri.is_some(),
        keys.jwks.is_some(),
    ];
    match set {
        [true, false, false] => {
            check_url_scheme(&spec.issuer).map_err(|m| {
                (
                    "spec.keys.discovery".to_owned(),
                    format!("discovery needs an https issuer: {m}"),
                )
            })?;
            Ok(KeyPlan::Discovery)
        }
        [false, true, false] => {
            let uri = keys.jwks_uri.clone().unwrap_or_default();
            check_url_scheme(&uri).map_err(|m| ("spec.keys.jwksUri".to_owned(), m))?;
            Ok(KeyPlan::JwksUri(uri))
        }
        [false, false, true] => Ok(KeyPlan::Inline(keys.jwks.clone().unwrap_or_default())),
        [false, false, false] => Err((
            "spec.keys".to_owned(),
            "no way to get keys: set one of discovery, jwksUri, jwks".to_owned(),
        )),
        _ => Err((
            "spec.keys".to_owned(),
            "set exactly one of discovery, jwksUri, jwks".to_owned(),
        )),
    }
}

fn validate_cluster(spec: &ClusterSpec) -> Result<(), (String, String)> {
    if spec.issuer.trim().is_empty() {
        return Err(("spec.issuer".into(), "is empty".into()));
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.is_empty()) {
        return Err((
            "spec.audiences".into(),
            "must list at least one non-empty audience".into(),
        ));
    }
    if spec.algorithms.as_ref().is_some_and(|a| a.is_empty()) {
        return Err((
            "spec.algorithms".into(),
            "is empty (leave it out for RS256, ES256)".into(),
        ));
    }
    // An inline JWKS is parsed (and reported at spec.keys.jwks) once, when the snapshot is built.
    key_plan(spec)?;
    leeways(spec)?;
    Ok(())
}

fn leeways(spec: &ClusterSpec) -> Result<Leeways, (String, String)> {
    let mut l = Leeways::default();
    if let Some(lw) = &spec.leeway {
        for (field, value, slot) in [
            ("spec.leeway.expiration", &lw.expiration, &mut l.expiration),
            ("spec.leeway.notBefore", &lw.not_before, &mut l.not_before),
            ("spec.leeway.issuedAt", &lw.issued_at, &mut l.issued_at),
        ] {
            if let Some(v) = value {
                let d = parse_duration(field, v).map_err(|m| (field.to_owned(), m))?;
                if d > std::time::Duration::from_secs(600) {
                    return Err((
                        field.to_owned(),
                        format!("{v:?} is more than 10m; keep leeways short"),
                    ));
                }
                *slot = d;
            }
        }
    }
    Ok(l)
}

fn check_shared_issuers(
    clusters: &[ClusterResource],
    err: &mut impl FnMut(&str, &str, &str, String),
) -> Vec<String> {
    let mut colliding = Vec::new();
    let mut by_issuer: HashMap<&str, Vec<&ClusterResource>> = HashMap::new();
    for c in clusters {
        by_issuer.entry(c.spec.issuer.as_str()).or_default().push(c);
    }
    for group in by_issuer.values().filter(|g| g.len() > 1) {
        // Clusters sharing an issuer are told apart by their keys only; two clusters fetching the
        // same keys would be indistinguishable.
        // Every member of a colliding pair is left out (in Kubernetes mode, where the others
        // keep serving): keeping one, say the first by name, would let a newly added cluster
        // take over an existing one's tokens, its labels and audiences deciding what they get.
        let mut seen: HashMap<String, &ClusterResource> = HashMap::new();
        let mut reported: HashSet<&str> = HashSet::new();
        for c in group {
            let key = match key_plan(&c.spec) {
                Ok(KeyPlan::Discovery) => "discovery".to_owned(),
                Ok(KeyPlan::JwksUri(u)) => format!("jwksUri {u}"),
                Ok(KeyPlan::Inline(v)) => format!("jwks {v}"),
                Err(_) => continue,
            };
            let Some(&first) = seen.get(&key) else {
                seen.insert(key, c);
                continue;
            };
            for (this, other) in [(first, &c.name), (*c, &first.name)] {
                if reported.insert(this.name.as_str()) {
                    err(
                        &this.origin,
                        &format!("Cluster/{}", this.name),
                        "spec.keys",
                        format!(
                            "shares issuer {:?} and the same key source with cluster {other:?}; clusters sharing an issuer must have their own keys (jwksUri or inline jwks) so a token identifies exactly one",
                            this.spec.issuer
                        ),
                    );
                    colliding.push(this.name.clone());
                }
            }
        }
    }
    colliding
}

/// A generator ready to serve.
#[derive(Debug)]
pub struct GeneratorEntry {
    /// `namespace/kind/name`.
    pub reference: String,
    /// The kind.
    pub kind: GeneratorKind,
    /// The built generator.
    pub generator: Generator,
}

/// An immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Clusters by exact issuer: nearly always one, kept in the map's bucket.
    pub clusters_by_issuer: LookupMap<String, SmallVec<[Arc<ClusterVerifier>; 1]>>,
    /// All clusters by name.
    pub clusters: BTreeMap<String, Arc<ClusterVerifier>>,
    /// Compiled Authorizations.
    pub authorizer: Authorizer,
    /// Generators by `namespace/kind/name`.
    pub generators: LookupMap<CompactString, Arc<GeneratorEntry>>,
    /// Where the configuration came from, for logs.
    pub source: String,
}

impl Snapshot {
    /// Clusters registered for `issuer`.
    pub fn clusters_for(&self, issuer: &str) -> Option<&[Arc<ClusterVerifier>]> {
        self.clusters_by_issuer.get(issuer).map(SmallVec::as_slice)
    }
}

/// Compiles resources into a snapshot: key sources and store connections from `state` (shared
/// across reloads), authorizations, built generators. Fails on any problem.
pub fn build_snapshot(
    res: Resources,
    state: &AppState,
    source: String,
) -> Result<Snapshot, LoadError> {
    let (snapshot, errors) = build_snapshot_lenient(res, state, source);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(LoadError(errors))
    }
}

/// Same as [`build_snapshot`], leaving out what cannot be built and reporting it.
pub fn build_snapshot_lenient(
    res: Resources,
    state: &AppState,
    source: String,
) -> (Snapshot, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut clusters = BTreeMap::new();
    let mut by_issuer: HashMap<String, Vec<Arc<ClusterVerifier>>> = HashMap::new();
    for c in res.clusters {
        let resource = format!("Cluster/{}", c.name);
        let fail = |field: &str, message: String| ConfigError {
            origin: c.origin.clone(),
            resource: resource.clone(),
            field: field.to_owned(),
            message,
        };
        // The federation's own tokens are for relying parties: one presented back as a caller's
        // would carry the identity of whichever workload it was minted for.
        if let Some(own) = &state.issuer
            && c.spec.issuer.trim_end_matches('/') == own.url()
        {
            errors.push(fail(
                "spec.issuer",
                format!(
                    "{:?} is this federation's own issuer URL: the tokens it signs are for other services, never callers of esi",
                    c.spec.issuer
                ),
            ));
            continue;
        }
        let plan = match key_plan(&c.spec) {
            Ok(p) => p,
            Err((f, m)) => {
                errors.push(fail(&f, m));
                continue;
            }
        };
        let keys = match (&plan, plan.source(&c.spec)) {
            (KeyPlan::Inline(v), _) => match KeyRing::from_value(v) {
                Ok(ring) => ClusterKeys::Inline(Arc::new(ring)),
                Err(m) => {
                    errors.push(fail("spec.keys.jwks", m));
                    continue;
                }
            },
            (_, Some(key)) => match state.jwks.source(key, &c.name) {
                Ok(s) => ClusterKeys::Remote(s),
                Err(m) => {
                    errors.push(fail("spec.caBundle", m));
                    continue;
                }
            },
            (_, None) => unreachable!("only inline keys have no source"),
        };
        let leeway = match leeways(&c.spec) {
            Ok(l) => l,
            Err((f, m)) => {
                errors.push(fail(&f, m));
                continue;
            }
        };
        let algorithms: AlgorithmSet = c
            .spec
            .algorithms
            .clone()
            .unwrap_or_else(|| vec![Algorithm::RS256, Algorithm::ES256])
            .into_iter()
            .collect();
        let verifier = Arc::new(ClusterVerifier {
            name: c.name.as_str().into(),
            labels: c.labels,
            issuer: c.spec.issuer.clone(),
            audiences: c.spec.audiences.iter().map(|a| a.as_str().into()).collect(),
            algorithms,
            leeway,
            keys,
        });
        by_issuer
            .entry(c.spec.issuer)
            .or_default()
            .push(verifier.clone());
        clusters.insert(c.name, verifier);
    }
    let auths: Vec<(String, AuthorizationSpec)> = res
        .authorizations
        .into_iter()
        .map(|(n, (s, _))| (n, s))
        .collect();
    let previous = state.snapshot();
    let authorizer = Authorizer::carrying(&auths, previous.as_ref().map(|s| &s.authorizer));
    let mut generators =
        LookupMap::with_capacity_and_hasher(res.generators.len(), Default::default());
    // The audiences of the federation's own logins, which no workload may hold a token for.
    let own_audiences: HashMap<String, (String, &str)> = res
        .stores
        .iter()
        .filter_map(|((ns, name), (store, _))| {
            let (field, audiences) = store.own_login_audiences()?;
            Some(
                audiences
                    .into_iter()
                    .map(move |a| (a, (format!("{ns}/{name}"), field))),
            )
        })
        .flatten()
        .collect();
    // The audiences of the identity tokens the federation trades at a relying party for a
    // caller (Quay, Cloudsmith): the party trusts the issuer and the caller's subject, so a
    // workload holding its own token for one could trade it past that generator's
    // Authorization.
    let exchange_audiences: HashMap<String, String> = res
        .generators
        .iter()
        .filter_map(|(key, (spec, _))| Some((spec.exchange_audience()?, key.clone())))
        .collect();
    // Generators on one store share its connection and login, across reloads too.
    let mut shared = state.stores.lock().unwrap_or_else(|p| p.into_inner());
    for (key, (spec, origin)) in res.generators {
        let audiences = spec.workload_token_audiences();
        let clash = audiences.iter().find_map(|a| {
            own_audiences.get(a.as_str()).map(|(store, field)| {
                format!(
                    "{a:?} is the audience of the federation's own login to a backend \
                     (SecretStore {store}, {field}): a workload must never hold a token for \
                     it; give one of them another audience"
                )
            })
        });
        let clash = clash.or_else(|| {
            audiences.iter().find_map(|a| {
                exchange_audiences.get(a.as_str()).map(|exchange| {
                    format!(
                        "{a:?} is the audience of the identity tokens {} trades for its \
                         backend's tokens: a workload holding one could trade it itself, past \
                         that generator's Authorization; give one of them another audience",
                        generator_resource(exchange)
                    )
                })
            })
        });
        if let Some(message) = clash {
            errors.push(ConfigError {
                origin,
                resource: generator_resource(&key),
                field: "spec.audiences".to_owned(),
                message,
            });
            continue;
        }
        let store = spec.store_ref().and_then(|s| {
            let ns = key.split('/').next().unwrap_or_default().to_owned();
            res.stores.get(&(ns, s.to_owned())).map(|(st, _)| st)
        });
        match Generator::build_shared(&spec, store, &mut shared) {
            Ok(generator) => {
                generators.insert(
                    CompactString::from(key.as_str()),
                    Arc::new(GeneratorEntry {
                        reference: key,
                        kind: spec.kind(),
                        generator,
                    }),
                );
            }
            Err(e) => errors.push(ConfigError {
                origin,
                resource: generator_resource(&key),
                field: String::new(),
                message: e.to_string(),
            }),
        }
    }
    let clusters_by_issuer = by_issuer
        .into_iter()
        // Collected, not `SmallVec::from_vec`, which keeps the `Vec`'s allocation when its
        // capacity (4 after a push) exceeds the inline one.
        .map(|(k, v)| (k, v.into_iter().collect::<SmallVec<_>>()))
        .collect();
    (
        Snapshot {
            clusters_by_issuer,
            clusters,
            authorizer,
            generators,
            source,
        },
        errors,
    )
}

/// Reads, validates and compiles the configuration at `path`.
pub fn load_path(path: &Path, state: &AppState) -> Result<Snapshot, LoadError> {
    build_snapshot(read_resources(path)?, state, path.display().to_string())
}

/// Reads and validates the configuration at `path` into resources, each file's documents as
/// the file is read: [`load_path`] without the compilation, which needs the federation's state
/// (the start-up reads the configuration while its keys are fetched).
pub fn read_resources(path: &Path) -> Result<Resources, LoadError> {
    let mut reader = ResourceReader::default();
    // A file that cannot be read fails the load with the files' problems only, as if the
    // documents read were never looked at.
    read_each(path, &mut |doc| reader.add(doc))?;
    let (res, errors) = reader.finish();
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(LoadError(errors))
    }
}

/// Same as [`load_path`] from text (the embedded dev configuration, tests).
pub fn load_text(origin: &str, text: &str, state: &AppState) -> Result<Snapshot, LoadError> {
    let docs = parse_text(origin, text).map_err(|e| LoadError(vec![e]))?;
    let res = parse_resources(docs)?;
    build_snapshot(res, state, origin.to_owned())
}
