//! The esi mutating admission webhook (in progress).
