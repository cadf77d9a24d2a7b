//! The parts of a Pod the webhook reads, and the `AdmissionReview` request around it.
//!
//! k8s-openapi's `Pod` reads every field of the API (resources, probes, env, ports, ...) into
//! owned values only to drop them again: it was a third of an admission's CPU. These types
//! read the fields [`crate::mutate`] looks at, with k8s-openapi's names and shapes (a missing
//! or `null` list or name reads as empty, as k8s-openapi reads it), and skip the rest. The
//! patch never re-serializes the Pod (see [`crate::mutate`]), so nothing unread is lost.
//!
//! Every struct here is read from a JSON object only ([`esi_api::json::Object`]), as
//! k8s-openapi reads it: serde's derive alone would also read one from an array of its fields.

use std::cell::Cell;
use std::collections::BTreeMap;

use esi_api::json::{Object, optional_object};
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A Pod, as far as the webhook reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Pod {
    /// Name, labels, annotations.
    #[serde(default, deserialize_with = "object_or_default")]
    pub metadata: ObjectMeta,
    /// The spec; `None` when absent.
    #[serde(default, deserialize_with = "optional_object")]
    pub spec: Option<PodSpec>,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `name` (empty for a Pod created from `generateName`).
    #[serde(default)]
    pub name: Option<String>,
    /// `generateName`.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `labels`.
    #[serde(default, deserialize_with = "bounded_map")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `annotations`.
    #[serde(default, deserialize_with = "bounded_map")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// `containers`.
    #[serde(default, deserialize_with = "bounded_objects_or_empty")]
    pub containers: Vec<Container>,
    /// `initContainers`.
    #[serde(default, deserialize_with = "bounded_objects")]
    pub init_containers: Option<Vec<Container>>,
    /// `ephemeralContainers` (only their names: the webhook must not take one).
    #[serde(default, deserialize_with = "bounded_objects")]
    pub ephemeral_containers: Option<Vec<Named>>,
    /// `volumes` (only their names).
    #[serde(default, deserialize_with = "bounded_objects")]
    pub volumes: Option<Vec<Named>>,
    /// `securityContext`.
    #[serde(default, deserialize_with = "optional_object")]
    pub security_context: Option<SecurityContext>,
    /// `shareProcessNamespace`.
    #[serde(default)]
    pub share_process_namespace: Option<bool>,
    /// `serviceAccountName`.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// `serviceAccount` (deprecated alias of `serviceAccountName`).
    #[serde(default)]
    pub service_account: Option<String>,
    /// `nodeSelector` (its `kubernetes.io/arch` picks an image index's image).
    #[serde(default, deserialize_with = "bounded_map")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// `affinity` (its required node affinity narrows the platforms an image is read for).
    #[serde(default, deserialize_with = "optional_object")]
    pub affinity: Option<Affinity>,
}

impl PodSpec {
    /// The required node affinity's `NodeSelector`, if the Pod has one.
    pub fn required_node_selector(&self) -> Option<&NodeSelector> {
        self.affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .required_during_scheduling_ignored_during_execution
            .as_ref()
    }
}

/// `affinity`, as far as its node affinity goes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// `nodeAffinity`.
    #[serde(default, deserialize_with = "optional_object")]
    pub node_affinity: Option<NodeAffinity>,
}

/// `nodeAffinity`, as far as its required part goes (the preferred one does not bind the
/// scheduler).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    /// `requiredDuringSchedulingIgnoredDuringExecution`.
    #[serde(default, deserialize_with = "optional_object")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
}

/// A `NodeSelector`: the node must match one of its terms.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// `nodeSelectorTerms`.
    #[serde(default, deserialize_with = "bounded_objects_or_empty")]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// A `NodeSelectorTerm`: the node must meet all of its requirements.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    /// `matchExpressions` (on node labels).
    #[serde(default, deserialize_with = "bounded_objects")]
    pub match_expressions: Option<Vec<NodeSelectorRequirement>>,
    /// `matchFields` (on node fields, `metadata.name` only: nothing about a platform).
    #[serde(default, deserialize_with = "bounded_objects")]
    pub match_fields: Option<Vec<NodeSelectorRequirement>>,
}

/// A `NodeSelectorRequirement`: `key`, `operator` (`In`, `NotIn`, `Exists`, `DoesNotExist`,
/// `Gt`, `Lt`) and `values`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    /// `key`.
    #[serde(default, deserialize_with = "null_default")]
    pub key: String,
    /// `operator`.
    #[serde(default, deserialize_with = "null_default")]
    pub operator: String,
    /// `values`.
    #[serde(default, deserialize_with = "bounded_list")]
    pub values: Option<Vec<String>>,
}

/// A container of `containers` or `initContainers`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `name`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `image` (read only to look its entrypoint up, see [`crate::entrypoint`]).
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    /// `command`.
    #[serde(default, deserialize_with = "bounded_list")]
    pub command: Option<Vec<String>>,
    /// `args` (whether there are any decides if the image's `CMD` runs).
    #[serde(default, deserialize_with = "bounded_list")]
    pub args: Option<Vec<String>>,
    /// `volumeMounts`.
    #[serde(default, deserialize_with = "bounded_objects")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// `securityContext`.
    #[serde(default, deserialize_with = "optional_object")]
    pub security_context: Option<SecurityContext>,
}

/// A `volumeMounts` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// `name` of the volume.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `mountPath`.
    #[serde(default, deserialize_with = "null_default")]
    pub mount_path: String,
    /// `readOnly`.
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// The ids of the Pod's or a container's `securityContext`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// `fsGroup` (the Pod's only: a container has none).
    #[serde(default)]
    pub fs_group: Option<i64>,
}

/// Something known by its name only (a volume, an ephemeral container).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Named {
    /// `name`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
}

/// The operation of an admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
}

/// `request.kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Kind {
    /// API group (empty for the core group).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// `request.resource`: required, not read.
#[derive(Debug, Clone, Deserialize)]
struct Resource {
    #[allow(dead_code)]
    group: IgnoredAny,
    #[allow(dead_code)]
    version: IgnoredAny,
    #[allow(dead_code)]
    resource: IgnoredAny,
}

/// The `request` of an `AdmissionReview`, with the fields kube-core's `AdmissionRequest`
/// requires (`uid`, `kind`, `resource`, `operation`, `userInfo`) and the ones the webhook
/// reads. `oldObject`, `options` and the rest are skipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// `uid`, copied into the answer.
    pub uid: String,
    /// The kind of the object.
    #[serde(deserialize_with = "esi_api::json::object")]
    pub kind: Kind,
    #[allow(dead_code)]
    #[serde(deserialize_with = "esi_api::json::object")]
    resource: Resource,
    /// `subResource`.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `operation`.
    pub operation: Operation,
    #[allow(dead_code)]
    user_info: IgnoredAny,
    /// `object`.
    #[serde(default, deserialize_with = "optional_object")]
    pub object: Option<Pod>,
}

/// How many list and map entries one admission may read into these types: far more than any
/// Pod holds, and a bound on the memory a hostile body can make them take. A list entry such
/// as `{}` is 3 bytes of JSON and ~130 bytes as a [`Container`]: without a bound, a 4 MiB body
/// of them would take ~170 MB.
pub const MAX_ENTRIES: usize = 100_000;

thread_local! {
    /// Entries the parse running on this thread may still read: [`MAX_ENTRIES`] inside
    /// [`budgeted`], unbounded outside (a Pod read from elsewhere than a request).
    static ENTRIES_LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `parse` with [`MAX_ENTRIES`] list and map entries to read into these types, on this
/// thread: a parse that reads more fails, saying so.
pub fn budgeted<R>(parse: impl FnOnce() -> R) -> R {
    let before = ENTRIES_LEFT.replace(MAX_ENTRIES);
    let result = parse();
    ENTRIES_LEFT.set(before);
    result
}

fn take_entry<E: serde::de::Error>() -> Result<(), E> {
    ENTRIES_LEFT.with(|left| match left.get() {
        0 => Err(E::custom(format!(
            "more than {MAX_ENTRIES} list and map entries: not a Pod this webhook reads"
        ))),
        n => {
            left.set(n - 1);
            Ok(())
        }
    })
}

/// A list whose entries count against the budget ([`budgeted`]).
struct Bounded<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(entry) = seq.next_element()? {
                    take_entry()?;
                    entries.push(entry);
                }
                Ok(Bounded(entries))
            }
        }
        d.deserialize_seq(Entries(std::marker::PhantomData))
    }
}

/// A string map whose entries count against the budget ([`budgeted`]).
struct BoundedMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for BoundedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = BoundedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    take_entry()?;
                    entries.insert(k, v);
                }
                Ok(BoundedMap(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// An optional list, bounded ([`budgeted`]); `null` reads as absent.
fn bounded_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Bounded<T>>::deserialize(d)?.map(|b| b.0))
}

/// An optional string map, bounded ([`budgeted`]); `null` reads as absent.
fn bounded_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(Option::<BoundedMap>::deserialize(d)?.map(|b| b.0))
}

/// An object ([`Object`]); absent or `null` reads as its default, as k8s-openapi reads it.
fn object_or_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(optional_object(d)?.unwrap_or_default())
}

/// An optional list of objects ([`Object`]), bounded ([`budgeted`]).
fn bounded_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Bounded<Object<T>>>::deserialize(d)?
        .map(|b| b.0.into_iter().map(|o| o.0).collect()))
}

/// A list of objects ([`Object`]), bounded; absent or `null` reads as empty, as k8s-openapi
/// reads it.
fn bounded_objects_or_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(bounded_objects(d)?.unwrap_or_default())
}

/// A field k8s-openapi reads as its default when it is absent or `null`.
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The view reads what k8s-openapi reads, for the fields it has.
    #[test]
    fn reads_what_k8s_openapi_reads() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "api-", "namespace": "ns", "labels": {"a": "b"},
                         "annotations": {"x": "y"}, "ownerReferences": [{"kind": "ReplicaSet"}],
                         "managedFields": [{"fieldsV1": {"f:spec": {}}}]},
            "spec": {
                "serviceAccountName": "sa", "shareProcessNamespace": true,
                "securityContext": {"runAsUser": 1, "runAsGroup": 2, "fsGroup": 3, "runAsNonRoot": true},
                "containers": [
                    {"name": "app", "image": "i", "command": ["/a"], "args": ["x"], "ports": [{"containerPort": 80}],
                     "resources": {"limits": {"cpu": "1"}}, "env": [{"name": "A", "value": "b"}],
                     "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}],
                     "securityContext": {"runAsUser": 4, "runAsGroup": null}},
                    {"name": null, "command": null, "volumeMounts": [{"name": "w"}]}
                ],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debug", "targetContainerName": "app"}],
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "c", "configMap": {"name": "m"}}],
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
                "affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 1, "preference": {"matchExpressions": []}}
                        ],
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [
                                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
                                {"key": "kubernetes.io/os", "operator": "Exists"}
                            ]},
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
                        ]}
                    }
                }
            }
        });
        let ours: Pod = serde_json::from_value(pod.clone()).unwrap();
        let theirs: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        let (os, ts) = (ours.spec.as_ref().unwrap(), theirs.spec.as_ref().unwrap());
        assert_eq!(ours.metadata.generate_name, theirs.metadata.generate_name);
        assert_eq!(ours.metadata.namespace, theirs.metadata.namespace);
        assert_eq!(ours.metadata.labels, theirs.metadata.labels);
        assert_eq!(ours.metadata.annotations, theirs.metadata.annotations);
        assert_eq!(os.service_account_name, ts.service_account_name);
        assert_eq!(os.share_process_namespace, ts.share_process_namespace);
        let (psc, tpsc) = (
            os.security_context.as_ref().unwrap(),
            ts.security_context.as_ref().unwrap(),
        );
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (tpsc.run_as_user, tpsc.run_as_group, tpsc.fs_group)
        );
        assert_eq!(os.containers.len(), ts.containers.len());
        for (o, t) in os.containers.iter().zip(&ts.containers) {
            assert_eq!(o.name, t.name);
            assert_eq!(o.command, t.command);
            let om: Vec<_> = o
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (&m.name, &m.mount_path, m.read_only))
                .collect();
            let tm: Vec<_> = t
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (&m.name, &m.mount_path, m.read_only))
                .collect();
            assert_eq!(om, tm);
            assert_eq!(
                o.security_context
                    .as_ref()
                    .map(|s| (s.run_as_user, s.run_as_group)),
                t.security_context
                    .as_ref()
                    .map(|s| (s.run_as_user, s.run_as_group))
            );
        }
        let names = |v: &Option<Vec<Named>>| {
            v.iter()
                .flatten()
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(os.node_selector, ts.node_selector);
        let ours_terms = &os.required_node_selector().unwrap().node_selector_terms;
        let theirs_terms = &ts
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap()
            .node_selector_terms;
        assert_eq!(ours_terms.len(), theirs_terms.len());
        for (o, t) in ours_terms.iter().zip(theirs_terms) {
            for (o, t) in [
                (&o.match_expressions, &t.match_expressions),
                (&o.match_fields, &t.match_fields),
            ] {
                let t = t.as_ref().map(|t| {
                    t.iter()
                        .map(|r| NodeSelectorRequirement {
                            key: r.key.clone(),
                            operator: r.operator.clone(),
                            values: r.values.clone(),
                        })
                        .collect::<Vec<_>>()
                });
                assert_eq!(o, &t);
            }
        }
        assert_eq!(names(&os.volumes), ["v", "c"]);
        assert_eq!(names(&os.ephemeral_containers), ["debug"]);
        assert_eq!(os.init_containers.as_ref().unwrap()[0].name, "init");
        assert_eq!(os.containers[1].name, "");
    }

    #[test]
    fn a_pod_without_spec_or_metadata_reads() {
        let pod: Pod = serde_json::from_value(json!({"metadata": null})).unwrap();
        assert_eq!(pod, Pod::default());
    }

    #[test]
    fn wrong_types_are_refused() {
        for bad in [
            // Found by tests/hostile_admission.rs: serde's derive read these arrays as
            // structs, field by field, and the patch then failed to apply (`[[]]`), or a
            // value of the Pod was echoed as a container name.
            json!({"spec": {"containers": [[]]}}),
            json!({"spec": {"containers": [["s3cret"]]}}),
            json!({"spec": {"containers": [{"name": "a"}], "initContainers": [["i"]]}}),
            json!({"spec": [[{"name": "a"}]]}),
            json!({"metadata": [null, null, null, {"esi.dev/inject": "true"}]}),
            json!({"spec": {"containers": {"name": "a"}}}),
            json!({"spec": {"containers": [{"name": 1}]}}),
            json!({"spec": {"securityContext": {"runAsUser": "root"}}}),
            json!({"metadata": {"labels": ["a"]}}),
            // The same for the structs inside the spec and a container, which serde's derive
            // still read from arrays: `[1000]` as `{runAsUser: 1000}`, `["v", "/v"]` as a
            // mount of volume `v` at `/v`.
            json!({"spec": {"securityContext": [1000, 1000, 1000]}}),
            json!({"spec": {"containers": [{"name": "a", "securityContext": [0]}]}}),
            json!({"spec": {"containers": [{"name": "a", "volumeMounts": [["v", "/v"]]}]}}),
            json!({"spec": {"containers": [{"name": "a"}], "volumes": [["v"]]}}),
            json!({"spec": {"containers": [{"name": "a"}], "ephemeralContainers": [["d"]]}}),
            json!({"spec": {"affinity": [{"nodeAffinity": {}}]}}),
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [[]]}}}}}),
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [["kubernetes.io/arch", "In", ["arm64"]]]}]}}}}}),
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": "arm64"}]}]}}}}}),
        ] {
            assert!(serde_json::from_value::<Pod>(bad.clone()).is_err(), "{bad}");
            assert!(
                serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
