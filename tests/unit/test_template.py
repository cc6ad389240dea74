"""Template definitions, templateParas validation (E200028), signatures and rendering."""

from __future__ import annotations

import pytest

from bridge.template import (
    SignatureError,
    Template,
    TemplateError,
    TemplateParamError,
    TemplateVariable,
    VarKind,
    parse_template,
    render,
    validate_signature,
)

ALL_KINDS = "Code ${NUM_6} for ${TXT_6} on ${DATE} at ${TIME}."
ALL_KINDS_OK = ["012345", "Gate 1", "2017/7/1", "14:30"]


def param_error(template: str, params) -> TemplateParamError:
    with pytest.raises(TemplateParamError) as info:
        parse_template(template).render(params)
    return info.value


class TestParseTemplate:
    def test_variables_in_order(self):
        """Each placeholder becomes a typed variable, in the order they appear."""
        assert parse_template(ALL_KINDS).variables == (
            TemplateVariable(VarKind.NUM, 6, "${NUM_6}"),
            TemplateVariable(VarKind.TXT, 6, "${TXT_6}"),
            TemplateVariable(VarKind.DATE, None, "${DATE}"),
            TemplateVariable(VarKind.TIME, None, "${TIME}"),
        )

    def test_literals_around_variables(self):
        """The text between placeholders is kept exactly, one more piece than variables."""
        parsed = parse_template("${TXT_1}${TXT_2} x")
        assert parsed.literals == ("", "", " x")

    def test_500_char_template(self):
        """A template of exactly 500 characters is accepted; 501 is not."""
        parse_template("中" * 491 + "${NUM_6}a")
        with pytest.raises(TemplateError, match="501 characters"):
            parse_template("中" * 492 + "${NUM_6}a")

    def test_20_variables(self):
        """Twenty variables are allowed; the twenty-first is an error."""
        assert len(parse_template("${TXT_1} " * 20).variables) == 20
        with pytest.raises(TemplateError, match="21 variables"):
            parse_template("${TXT_1} " * 21)

    @pytest.mark.parametrize("n", [1, 20])
    def test_n_bounds_accepted(self, n):
        """n may be anything from 1 to 20."""
        assert parse_template(f"${{NUM_{n}}}").variables[0].max_len == n

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            ("${TXT_0}", "n must be 1-20, got 0"),
            ("${NUM_21}", "n must be 1-20, got 21"),
            ("${NUM_100}", "unknown variable"),
            ("${FOO}", "unknown variable ${FOO}"),
            ("${txt_3}", "unknown variable"),
            ("${TXT}", "unknown variable"),
            ("${ DATE }", "unknown variable"),
            ("Code ${NUM_6", "unterminated variable"),
        ],
    )
    def test_bad_definitions(self, template, message):
        """A malformed or unknown placeholder is a TemplateError naming it."""
        with pytest.raises(TemplateError, match=message.replace("$", r"\$")):
            parse_template(template)

    def test_plain_dollar_and_braces_are_text(self):
        """A dollar sign or brace that does not start ``${`` is ordinary text."""
        assert parse_template("Pay $5 {now}").variables == ()


class TestParams:
    def test_num_keeps_leading_zero(self):
        """A 6-digit code "012345" stays 6 digits: parameters are never numbers."""
        assert render("HUAWEI", "Code: ${NUM_6}", ["012345"]) == "[HUAWEI]Code: 012345"

    def test_all_kinds_render(self):
        """Valid values for each variable kind are inserted verbatim."""
        assert (
            parse_template(ALL_KINDS).render(ALL_KINDS_OK)
            == "Code 012345 for Gate 1 on 2017/7/1 at 14:30."
        )

    def test_num_message_names_parameter(self):
        """A non-digit in a NUM value names the parameter, its variable and the rule."""
        error = param_error("Hi ${TXT_3} ${NUM_6}", ["abc", "12a456"])
        assert str(error) == 'templateParas[1] (${NUM_6}): "12a456" must be 1-6 digits 0-9'
        assert (error.code, error.index) == ("E200028", 1)

    def test_reason_omits_value(self):
        """The reason, meant for logs, does not repeat the (possibly secret) value."""
        error = param_error("${NUM_6}", ["1234567"])
        assert "1234567" not in error.reason
        assert "1234567" in str(error)

    @pytest.mark.parametrize(
        ("value", "index"),
        [
            (["0123456", *ALL_KINDS_OK[1:]], 0),  # NUM too long
            (["", *ALL_KINDS_OK[1:]], 0),  # NUM empty
            (["12-34", *ALL_KINDS_OK[1:]], 0),  # NUM with a hyphen
            (["١٢٣", *ALL_KINDS_OK[1:]], 0),  # Arabic-Indic digits are not 0-9
            (["12²", *ALL_KINDS_OK[1:]], 0),  # str.isdigit() would accept this
            ([123456, *ALL_KINDS_OK[1:]], 0),  # a JSON number, not a string
            ([ALL_KINDS_OK[0], "Gate 12", *ALL_KINDS_OK[2:]], 1),  # TXT too long
            ([ALL_KINDS_OK[0], "", *ALL_KINDS_OK[2:]], 1),  # TXT empty
            ([ALL_KINDS_OK[0], "a{b}", *ALL_KINDS_OK[2:]], 1),  # TXT with braces
            ([*ALL_KINDS_OK[:2], "2017-07-01", ALL_KINDS_OK[3]], 2),
            ([*ALL_KINDS_OK[:2], "2017/2/30", ALL_KINDS_OK[3]], 2),  # no such day
            ([*ALL_KINDS_OK[:2], "17/7/1", ALL_KINDS_OK[3]], 2),
            ([*ALL_KINDS_OK[:3], "24:00"], 3),
            ([*ALL_KINDS_OK[:3], "9:30"], 3),
            ([*ALL_KINDS_OK[:3], "14:30:60"], 3),
            ([*ALL_KINDS_OK[:3], "14.30"], 3),
        ],
    )
    def test_bad_value(self, value, index):
        """Each kind of bad value is E200028 pointing at the parameter at fault."""
        error = param_error(ALL_KINDS, value)
        assert (error.code, error.index) == ("E200028", index)
        assert str(error).startswith(f"templateParas[{index}] (")

    @pytest.mark.parametrize(
        ("template", "value"),
        [
            ("${TXT_6}", "退订回复TD"),  # six characters, more than six bytes
            ("${TXT_2}", "😀x"),  # an emoji is one character
            ("${TXT_20}", "$5 and $x only"),
            ("${NUM_20}", "0" * 20),
            ("${DATE}", "2017/07/16"),
            ("${DATE}", "2024/2/29"),
            ("${TIME}", "00:00"),
            ("${TIME}", "23:59:59"),
        ],
    )
    def test_good_value(self, template, value):
        """Values within the rules render unchanged; TXT length counts characters."""
        assert parse_template(template).render([value]) == value

    @pytest.mark.parametrize("params", [[], ["1", "2", "3"], None])
    def test_wrong_count(self, params):
        """Too few, too many or missing templateParas is E200028 with no index."""
        error = param_error("${NUM_1} ${NUM_1}", params)
        assert error.index is None
        assert "expects 2 values" in str(error)

    @pytest.mark.parametrize("params", [None, []])
    def test_no_variables_no_params(self, params):
        """A template without variables takes templateParas absent or empty."""
        assert render("HUAWEI", "Hello", params) == "[HUAWEI]Hello"

    def test_no_variables_rejects_params(self):
        """A template without variables rejects any templateParas value."""
        assert param_error("Hello", ["x"]).index is None

    @pytest.mark.parametrize("params", ["012345", {"a": "1"}, 12])
    def test_not_a_list(self, params):
        """templateParas must be a list: a bare string is not split into characters."""
        error = param_error("${NUM_6}", params)
        assert error.index is None

    def test_rendered_text_over_500(self):
        """Values may not push the rendered template past 500 characters."""
        template = "x" * 490 + "${TXT_20}"
        assert len(parse_template(template).render(["y" * 10])) == 500
        error = param_error(template, ["y" * 11])
        assert error.index is None
        assert "501 characters" in str(error)

    def test_values_are_not_expanded_again(self):
        """A value that looks like a placeholder is text, not a second substitution."""
        assert render(None, "${TXT_8} ${NUM_1}", ["$NUM_1", "7"]) == "$NUM_1 7"


class TestSignature:
    @pytest.mark.parametrize("signature", ["HW", "HUAWEI", "华为云", "Ab12", "A" * 32, "5G网络"])
    def test_valid(self, signature):
        """Letters, digits and CJK characters, 2-32 long, are accepted as given."""
        assert validate_signature(signature) == signature

    @pytest.mark.parametrize(
        "signature",
        ["A", "A" * 33, "12345", "HUA WEI", "HW!", "[HW]", "Ｈｗ", "Café", "", "华为\U0001f600"],
    )
    def test_invalid(self, signature):
        """Too short or long, digits only, or other characters raise SignatureError."""
        with pytest.raises(SignatureError):
            validate_signature(signature)

    def test_case_is_kept(self):
        """Signatures are case-sensitive, so the case is never changed."""
        assert render("abc001", "x", None) == "[abc001]x"


class TestRender:
    def test_signature_in_brackets(self):
        """The signature goes first, in square brackets, before the rendered template."""
        assert render("HUAWEI", ALL_KINDS, ALL_KINDS_OK).startswith("[HUAWEI]Code 012345")

    def test_without_signature(self):
        """No signature (international traffic) means no brackets either."""
        assert render(None, "Hi ${TXT_3}", ["Bob"]) == "Hi Bob"

    def test_accepts_parsed_template(self):
        """A template parsed at config load renders without being parsed again."""
        parsed = parse_template("Hi ${TXT_3}")
        assert isinstance(parsed, Template)
        assert render("HUAWEI", parsed, ["Bob"]) == "[HUAWEI]Hi Bob"

    def test_bad_signature(self):
        """An invalid signature raises SignatureError, not a parameter error."""
        with pytest.raises(SignatureError):
            render("1", "x", None)

    def test_errors_are_value_errors(self):
        """All three error types are ValueErrors, so generic validation can catch them."""
        assert issubclass(TemplateParamError, ValueError)
        assert issubclass(TemplateError, ValueError)
        assert issubclass(SignatureError, ValueError)
