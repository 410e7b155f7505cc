import pytest

import dmnn

EXPECTED = {
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "resnet110", "resnet50_cifar",
    "resnet50", "resnet101", "mobilenetv2", "mobilenetv2_140",
}


def test_every_backbone_has_a_static_and_a_dmnn_entry():
    names = set(dmnn.list_models())
    assert EXPECTED.issubset(names)
    assert {f"dmnn_{n}" for n in EXPECTED}.issubset(names)
    assert set(dmnn.list_models("dmnn")) == {f"dmnn_{n}" for n in EXPECTED}


def test_unknown_model_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="unknown model name 'resnet5'"):
        dmnn.create_model("resnet5")


def test_unknown_keyword_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="sub_blocks"):
        dmnn.create_model("dmnn_resnet20", sub_blocks=2)
    with pytest.raises(ValueError, match="num_sub_blocks"):
        dmnn.create_model("resnet20", num_sub_blocks=2)  # static models have no sub-blocks


@pytest.mark.parametrize("name", ["resnet20", "dmnn_resnet20", "dmnn_mobilenetv2"])
def test_num_classes_is_configurable(name):
    model = dmnn.create_model(name, num_classes=7)
    assert model.head[-1].out_features == 7
    assert model.num_classes == 7
