//! Per-tenant flow storage for the portal (work in progress).
