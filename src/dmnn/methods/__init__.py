"""Gating methods: one file each (dmnn, aig, drnet, lcnet, twin, and static, the trivial case),
behind the :class:`~dmnn.methods.base.Method` interface. Nothing registers on import: the
registry adds the built-in methods on first use (:func:`dmnn.registry.builtin_methods`)."""
