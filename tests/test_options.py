"""advaudio.options: one declaration → converted values, defaults from the config, signature, docstring."""

import dataclasses
import inspect
from pathlib import Path

import pytest

from advaudio.errors import ParameterError
from advaudio.options import UNSET, Command, CommandResult, Option, bind, field_default


@dataclasses.dataclass(frozen=True)
class Config:
    threshold: float = 0.9
    names: tuple[str, ...] = ("a", "b")
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: int = 22050


COMMAND = Command(
    "demo thing",
    """Do a thing.

    At length.
    """,
    (
        Option("paths", kind="argument", nargs=-1, required=True, path=True, metavar="PATH..."),
        Option("fooling_rate", field="threshold", default=UNSET, cli_type=float, help="The rate."),
        Option("names", kind="list", field="names", default=UNSET),
        Option("option", kind="pairs", short="-o", field="options"),
        Option("param", kind="nested", short="-p"),
        Option("rate", field="inner.rate", default=UNSET, cli_type=int),
        Option("folds", kind="list", cli_type=int),
        Option("mode", default="x", choices=lambda: ("x", "y"), aliases=(("--why", "y"),)),
        Option("size", default="auto", parse=lambda s: None if s == "auto" else int(s)),
        Option("check", kind="flag", default=True),
        Option("force", kind="switch"),
        Option("out", required=True, path=True),
        Option("json", kind="switch", cli_only=True),
    ),
    configs={"": Config, "inner": Inner},
)


def test_defaults_come_from_the_config_fields():
    v = COMMAND.bind(["p"], {"out": "o"})
    assert v.fooling_rate == 0.9 and v.names == ("a", "b") and v.rate == 22050
    assert v.option == {} and v.param == {} and v.folds is None and v.size is None and v.check is True
    assert v.config() == {"threshold": 0.9, "names": ("a", "b"), "options": {}}
    assert v.config("inner") == {"rate": 22050}
    assert field_default(Config, "threshold")() == 0.9
    with pytest.raises(ValueError, match="no field"):
        field_default(Config, "nope")()


def test_text_and_typed_values_are_one_value():
    text = COMMAND.bind(["a", "b"], {"out": Path("o"), "fooling_rate": "0.5", "names": "x, y", "option": ["k=1", "s=t"],
                                     "param": ["pgd.steps=20", "pgd.step-size=0.1"], "folds": "1,2", "rate": "8000",
                                     "check": "no", "size": "32"})
    typed = COMMAND.bind([["a", "b"]], {"out": "o", "fooling_rate": 0.5, "names": ["x", "y"], "option": {"k": 1, "s": "t"},
                                        "param": {"pgd": {"steps": 20, "step_size": 0.1}}, "folds": [1, 2], "rate": 8000,
                                        "check": False, "size": 32})
    assert text.as_dict() == typed.as_dict()
    assert text.paths == ("a", "b") and text.out == "o" and text.folds == (1, 2) and text.size == 32
    assert COMMAND.bind([], {"paths": ["a"], "out": "o", "rate": 8000.0}).rate == 8000  # a whole float is an int


@pytest.mark.parametrize("kwargs, message", [
    ({"out": "o", "fooling": 1}, r"^demo thing: unknown option\(s\) fooling; its options: paths, fooling_rate"),
    ({}, r"^demo thing: --out is required$"),
    ({"out": "o", "rate": "fast"}, r"^demo thing: --rate must be an integer, got 'fast'$"),
    ({"out": "o", "rate": 1.5}, r"^demo thing: --rate must be an integer, got 1.5$"),
    ({"out": "o", "rate": True}, r"^demo thing: --rate must be an integer, got True$"),
    ({"out": "o", "mode": "z"}, r"^demo thing: --mode must be one of x, y, got 'z'$"),
    ({"out": "o", "check": "maybe"}, r"^demo thing: --check must be true or false, got 'maybe'$"),
    ({"out": "o", "option": ["novalue"]}, r"^demo thing: --option must look like KEY=VALUE, got 'novalue'$"),
    ({"out": "o", "param": ["steps=2"]}, r"^demo thing: --param must look like NAME.KEY=VALUE"),
    ({"out": "o", "names": 3}, r"^demo thing: --names takes a list, got 3$"),
])
def test_mistakes_are_one_line_naming_the_command(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        COMMAND.bind(["p"], kwargs)


def test_arguments_are_positional_and_required():
    with pytest.raises(ParameterError, match=r"^demo thing: PATH... is required$"):
        COMMAND.bind([], {"out": "o"})
    with pytest.raises(ParameterError, match="given as argument and as keyword"):
        COMMAND.bind(["p"], {"paths": ["q"], "out": "o"})
    one = Command("one", "One.", (Option("file", kind="argument", required=True),))
    with pytest.raises(ParameterError, match=r"^one: takes 1 positional argument\(s\) \(FILE\), got 2$"):
        one.bind(["a", "b"], {})
    assert one.bind([], {"file": "a"}).file == "a"


def test_the_function_has_a_signature_and_a_docstring_from_the_options():
    @COMMAND.function(CommandResult)
    def thing(v):
        """The body."""
        return CommandResult(Path(v.out))

    sig = inspect.signature(thing)
    assert str(sig).startswith("(*paths, fooling_rate=0.9, names=('a', 'b'), option={}, param={}, rate=22050,")
    assert "json" not in sig.parameters  # presentation only: the CLI's
    assert sig.parameters["out"].default is inspect.Parameter.empty
    assert sig.parameters["out"].kind is inspect.Parameter.KEYWORD_ONLY
    assert thing.__name__ == "thing" and thing.command is COMMAND
    assert thing.__doc__.startswith("``advaudio demo thing`` as a function: Do a thing.")
    assert "fooling_rate : float, default 0.9\n    The rate." in thing.__doc__
    assert thing("p", out="o").output() == ["o"]


def test_a_declaration_is_checked_when_made():
    with pytest.raises(ValueError, match="kind must be one of"):
        Option("x", kind="dict")
    with pytest.raises(ValueError, match="needs a field"):
        Option("x", default=UNSET)
    with pytest.raises(ValueError, match="declared twice"):
        Command("c", "C.", (Option("x"), Option("x")))
    with pytest.raises(ValueError, match="reads its default from config 'other'"):
        Command("c", "C.", (Option("x", field="other.x", default=UNSET),))


def test_a_result_prints_its_lines_then_its_path():
    class Result(CommandResult):
        def lines(self):
            return ["summary"]

    assert Result(Path("store")).output() == ["summary", "store"]
    assert Result(None).output() == ["summary"] and Result(None).exit_status == 0


def test_bind_alone():
    options = [Option("n", cli_type=int, default=1)]
    assert bind(options, "c", (), {}) == {"n": 1}
    assert bind(options, "c", (), {"n": None}) == {"n": None}  # a value option may be given None
