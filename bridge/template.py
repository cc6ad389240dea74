"""Templates, their parameters and the signature: what the customer's text becomes.

Parameters are only ever strings and go into the text verbatim: a ``${NUM_6}`` filled
with ``"012345"`` stays six digits (FAQ 8.5). Digits mean ASCII 0-9, not every Unicode
digit ``str.isdigit`` accepts. Errors in a request's parameters are
:class:`TemplateParamError` (platform code E200028); errors in a template's definition
are :class:`TemplateError`, raised when the config is loaded, long before a request.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_TEMPLATE_CHARS",
    "MAX_VARIABLES",
    "SignatureError",
    "Template",
    "TemplateError",
    "TemplateParamError",
    "TemplateVariable",
    "VarKind",
    "parse_template",
    "render",
    "validate_signature",
]

MAX_TEMPLATE_CHARS: Final = 500
MAX_VARIABLES: Final = 20
MAX_VAR_LENGTH: Final = 20

_VARIABLE = re.compile(r"\$\{(?P<body>[^{}]*)\}")
_BODY = re.compile(r"(?P<kind>TXT|NUM)_(?P<n>[0-9]{1,2})|DATE|TIME")
_DIGITS = re.compile(r"[0-9]+")
_DATE = re.compile(r"(?P<y>[0-9]{4})/(?P<m>[0-9]{1,2})/(?P<d>[0-9]{1,2})")
_TIME = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?")
_SIGNATURE_CHAR = re.compile(
    r"[A-Za-z0-9\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)


class VarKind(enum.StrEnum):
    TXT = "TXT"
    NUM = "NUM"
    DATE = "DATE"
    TIME = "TIME"


class TemplateError(ValueError):
    """A template definition breaks the platform rules (length, variables)."""


class SignatureError(ValueError):
    """A signature is not 2-32 letters, digits or CJK characters, or is all digits."""


class TemplateParamError(ValueError):
    """``templateParas`` do not fit the template; the platform answers E200028.

    ``index`` is the 0-based parameter at fault, or None when the list as a whole is
    wrong. ``reason`` says why without quoting the value, for logs (values can be
    verification codes); ``str()`` quotes it, for the API answer to the sender.
    """

    code: Final = "E200028"

    def __init__(self, message: str, *, index: int | None, reason: str) -> None:
        super().__init__(message)
        self.index = index
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TemplateVariable:
    """One ``${...}`` placeholder; ``max_len`` is its ``n`` (None for DATE and TIME)."""

    kind: VarKind
    max_len: int | None
    placeholder: str


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text around its variables, in order.

    ``literals`` has one more item than ``variables``; rendering interleaves them.
    """

    text: str
    variables: tuple[TemplateVariable, ...]
    literals: tuple[str, ...]

    def render(self, params: Sequence[str] | None) -> str:
        """The template with ``params`` substituted, after :meth:`check_params`."""
        values = self.check_params(params)
        pieces = [self.literals[0]]
        for value, literal in zip(values, self.literals[1:], strict=True):
            pieces += (value, literal)
        body = "".join(pieces)
        if len(body) > MAX_TEMPLATE_CHARS:
            raise TemplateParamError(
                f"templateParas: the rendered text is {len(body)} characters, "
                f"more than {MAX_TEMPLATE_CHARS}",
                index=None,
                reason=f"rendered text longer than {MAX_TEMPLATE_CHARS} characters",
            )
        return body

    def check_params(self, params: Sequence[str] | None) -> tuple[str, ...]:
        """Validate ``templateParas`` against the variables; raise TemplateParamError."""
        if params is None:
            params = ()
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise TemplateParamError(
                "templateParas: must be a list of strings",
                index=None,
                reason="not a list of strings",
            )
        if len(params) != len(self.variables):
            reason = f"template expects {len(self.variables)} values, got {len(params)}"
            raise TemplateParamError(f"templateParas: {reason}", index=None, reason=reason)
        for index, (variable, value) in enumerate(zip(self.variables, params, strict=True)):
            reason = _param_problem(variable, value)
            if reason is not None:
                shown = _show(value)
                raise TemplateParamError(
                    f"templateParas[{index}] ({variable.placeholder}): {shown} {reason}",
                    index=index,
                    reason=reason,
                )
        return tuple(params)


def _show(value: object) -> str:
    """The value as JSON, shortened so an error stays one readable line."""
    if isinstance(value, str) and len(value) > 40:
        value = value[:40] + "…"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _param_problem(variable: TemplateVariable, value: object) -> str | None:
    """Why ``value`` cannot fill ``variable``, or None when it can."""
    if not isinstance(value, str):
        return "must be a string (parameters are never converted from numbers)"
    n = variable.max_len
    if variable.kind is VarKind.TXT:
        if not 1 <= len(value) <= n:
            return f"must be 1-{n} characters, got {len(value)}"
        if "{" in value or "}" in value:
            return "must not contain { or }"
        return None
    if variable.kind is VarKind.NUM:
        if len(value) > n or not _DIGITS.fullmatch(value):
            return f"must be 1-{n} digits 0-9"
        return None
    if variable.kind is VarKind.DATE:
        return None if _is_date(value) else "must be a date yyyy/M/d, e.g. 2017/7/1"
    if _TIME.fullmatch(value):
        return None
    return "must be a time HH:mm or HH:mm:ss, e.g. 14:30"


def _is_date(value: str) -> bool:
    match = _DATE.fullmatch(value)
    if match is None:
        return False
    try:
        datetime.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError:
        return False
    return True


def _variable(body: str, placeholder: str) -> TemplateVariable:
    match = _BODY.fullmatch(body)
    if match is None:
        raise TemplateError(
            f"unknown variable {placeholder}: use ${{TXT_n}}, ${{NUM_n}}, ${{DATE}} or ${{TIME}}"
        )
    if match["kind"] is None:
        return TemplateVariable(kind=VarKind(body), max_len=None, placeholder=placeholder)
    n = int(match["n"])
    if not 1 <= n <= MAX_VAR_LENGTH:
        raise TemplateError(f"variable {placeholder}: n must be 1-{MAX_VAR_LENGTH}, got {n}")
    return TemplateVariable(kind=VarKind(match["kind"]), max_len=n, placeholder=placeholder)


def parse_template(template: str) -> Template:
    """Parse and check a template definition; raise TemplateError naming the problem.

    Any ``${`` must open a known variable, so a mistyped one is caught at start rather
    than sent to handsets as literal text.
    """
    if not isinstance(template, str):
        raise TemplateError("template must be a string")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(
            f"template is {len(template)} characters, more than {MAX_TEMPLATE_CHARS}"
        )
    variables: list[TemplateVariable] = []
    literals: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        literals.append(template[position : match.start()])
        variables.append(_variable(match["body"], match[0]))
        position = match.end()
    literals.append(template[position:])
    for literal in literals:
        if "${" in literal:
            raise TemplateError(f"unterminated variable at {literal[literal.index('${') :]!r:.40}")
    if len(variables) > MAX_VARIABLES:
        raise TemplateError(f"template has {len(variables)} variables, more than {MAX_VARIABLES}")
    return Template(text=template, variables=tuple(variables), literals=tuple(literals))


def validate_signature(signature: str) -> str:
    """Return ``signature`` unchanged (it is case-sensitive) or raise SignatureError."""
    if not isinstance(signature, str):
        raise SignatureError("signature must be a string")
    if not 2 <= len(signature) <= 32:
        raise SignatureError(f"signature must be 2-32 characters, got {len(signature)}")
    for char in signature:
        if not _SIGNATURE_CHAR.fullmatch(char):
            raise SignatureError(
                f"signature {signature!r}: {char!r} is not a letter, digit or CJK character"
            )
    if _DIGITS.fullmatch(signature):
        raise SignatureError(f"signature {signature!r} must not be digits only")
    return signature


def render(signature: str | None, template: str | Template, params: Sequence[str] | None) -> str:
    """``[signature]`` + the rendered template; the text that is counted and sent.

    ``signature`` None means no signature (international traffic has none).
    """
    parsed = template if isinstance(template, Template) else parse_template(template)
    body = parsed.render(params)
    if signature is None:
        return body
    return f"[{validate_signature(signature)}]{body}"
