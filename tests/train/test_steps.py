import pytest

from lottery.config import ConfigError, Step, to_iterations


@pytest.mark.parametrize(
    ("text", "steps_per_epoch", "expected"),
    [
        ("2000it", 100, 2000),
        ("40ep", 390, 15600),
        ("1ep500it", 390, 890),
        ("0", 10, 0),
        ("7", 10, 7),
        ("3ep", 1, 3),
    ],
)
def test_step_strings_convert_with_the_epoch_length(text, steps_per_epoch, expected):
    assert to_iterations(text, steps_per_epoch) == expected


@pytest.mark.parametrize("text", ["", "ep", "10 epochs", "500it1ep", "-5it", "1.5ep"])
def test_bad_step_strings_name_the_field_and_the_format(text):
    with pytest.raises(ConfigError, match=r"train\.steps=.*'2000it', '40ep' or '1ep500it'"):
        Step.parse(text, "train.steps")


def test_step_prints_back_as_it_was_written():
    assert str(Step.parse("1ep500it")) == "1ep500it"
    assert str(Step.parse("0it")) == "0it"
