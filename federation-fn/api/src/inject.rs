//! The contract between the webhook and `esi-cli` (annotation keys, env var names, mount
//! paths, the request spec the webhook hands to esi-cli). Being written; see the webhook issue.
