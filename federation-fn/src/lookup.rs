//! The hash map of the request path.

use std::collections::HashMap;

/// A map filled from the configuration or from an issuer's keys and only *looked up* with
/// request input (issuers, `kid`s, generator references, namespaces): foldhash, seeded per
/// process, hashes a 40-byte key in a fraction of SipHash's instructions. Flooding a hash table
/// needs control over what is inserted, which a caller of the API never has here; a map that
/// stores request input (the negative cache of unknown `kid`s) keeps std's SipHash.
pub type LookupMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
