"""The network and its parts: the block, the gate protocol, split rules, layers, the MACs table
and the routing record. Knows no method and no backbone."""
