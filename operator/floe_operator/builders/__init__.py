"""Pure builders: a resource's spec in, Kubernetes objects (plain dicts) out. No I/O here."""
