"""scripts/bench/op_profile.py: a DMNN forward's ops sorted into kinds next to the static one's."""

from __future__ import annotations

import json
import sys


def test_ops_are_sorted_into_kinds(load_script):
    script = load_script("bench/op_profile.py")
    assert script.kind_of("aten::index_select") == "row gather"
    assert script.kind_of("aten::index_add_") == "row scatter-add"
    assert script.kind_of("aten::mkldnn_convolution") == "conv"
    assert script.kind_of("aten::nonzero") == "other"


def test_only_the_gated_network_gathers_and_scatters_rows(monkeypatch, capsys, load_script):
    script = load_script("bench/op_profile.py")
    monkeypatch.setattr(sys, "argv", ["op_profile.py", "dmnn_resnet20", "--batch", "8",
                                      "--forwards", "1", "--json"])
    script.main()
    result = json.loads(capsys.readouterr().out)
    static, dmnn = result["static"]["by_kind_ms"], result["dmnn"]["by_kind_ms"]
    # r = 0.5 on 8 rows: some block has a partial pattern, so rows are gathered and added back
    assert dmnn["row gather"] > 0 and dmnn["row scatter-add"] > 0
    assert static.get("row gather", 0.0) == 0 and static.get("row scatter-add", 0.0) == 0
    assert static["conv"] > 0 and dmnn["conv"] > 0
    shares = result["share_of_static"]
    assert abs(sum(s["static"] for s in shares.values()) - 1.0) < 1e-6
    assert 0 < result["macs_ratio_vs_static"] < 1
