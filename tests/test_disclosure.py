"""Disclosure: the AI-Disclosure header, settings, notices, the transparency document and page, security.txt."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiobligations.disclosure import (
    MODES,
    TEMPLATE,
    Date,
    DisclosureSettings,
    DisplayString,
    Text,
    Token,
    ascii_safe,
    banner_html,
    disclosure_header,
    document_version,
    first_contact_notice,
    meta_tag,
    negotiate_language,
    parse_dictionary,
    parse_dictionary_members,
    render_transparency_page,
    security_txt,
    serialize_dictionary,
    short_notice,
    transparency_document,
)
from aiobligations.errors import ConfigurationError
from aiobligations.profile import Profile, load_profile

MINIMAL = """\
[provider]
name = "Test Co"
contact = "ops@t.example"

[service]
name = "Test Service"

[ledger]
origin = "t.example/log"
"""
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
VERIFIER = "t.example/log+0a1b2c3d+AQID"


def write_profile(tmp_path: Path, text: str) -> Profile:
    path = tmp_path / "aiobligations.toml"
    path.write_text(text, encoding="utf-8")
    return load_profile(path)


def drop_lines(text: str, prefix: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(prefix)) + "\n"


def settings_for(tmp_path: Path, extra: str = "", *, base: str = MINIMAL + "\n" + TEMPLATE) -> DisclosureSettings:
    return DisclosureSettings.from_profile(write_profile(tmp_path, base + extra), now=NOW)


@pytest.fixture(name="profile")
def _profile(tmp_path: Path) -> Profile:
    return write_profile(tmp_path, MINIMAL + "\n" + TEMPLATE)


@pytest.fixture(name="settings")
def _settings(profile: Profile) -> DisclosureSettings:
    return DisclosureSettings.from_profile(profile, now=NOW)


def typed(mapping: dict[str, Any]) -> list[tuple[str, type, Any]]:
    """Compare values with their exact types: True is not 1, a Token is not a plain str."""
    return [(key, type(value), value) for key, value in mapping.items()]


# --- The AI-Disclosure header (RFC 9651) ---------------------------------------------------------

KEYS = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
TOKENS = st.from_regex(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]{0,10}", fullmatch=True).map(Token)
INTEGERS = st.integers(-999_999_999_999_999, 999_999_999_999_999)
DECIMALS = st.integers(-999_999_999_999_999, 999_999_999_999_999).map(lambda n: n / 1000)
STRINGS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
SCALARS = st.one_of(
    st.booleans(), INTEGERS, DECIMALS, STRINGS, TOKENS, INTEGERS.map(Date),
    st.binary(max_size=12), st.text(max_size=8).map(DisplayString),
)
DICTIONARIES = st.dictionaries(KEYS, SCALARS, max_size=6)


class TestHeader:
    def test_contract_example(self) -> None:
        """The header of our HTTP contract (docs/disclosure.md) comes out byte for byte."""
        value = disclosure_header(provider="Example Co", model="m-1", date=1764331200)

        assert 'mode=ai-originated, provider="Example Co", model="m-1", date=@1764331200' == value

    def test_semicolon_form_and_extra_keys(self) -> None:
        """The draft's form puts later keys as parameters; extra keys such as filing are allowed."""
        value = disclosure_header(
            provider="Example Co", date=datetime(2025, 11, 28, 12, tzinfo=timezone.utc),
            extra={"filing": "Beijing-XX-2025", "reviewed-by": "editors"}, form=";",
        )

        assert 'mode=ai-originated; provider="Example Co"; date=@1764331200; filing="Beijing-XX-2025"; ' \
            'reviewed-by="editors"' == value

    def test_the_drafts_own_example_parses(self) -> None:
        """draft-abaris-aicdh's example reads as one flat mapping with the right types."""
        value = 'mode=ai-originated; model="gpt-4"; provider="OpenAI"; reviewed-by="editorial-team"; date=@1745286896'

        parsed = parse_dictionary(value)

        assert typed({
            "mode": Token("ai-originated"), "model": "gpt-4", "provider": "OpenAI",
            "reviewed-by": "editorial-team", "date": Date(1745286896),
        }) == typed(parsed)
        assert (Token("ai-originated"), {"model": "gpt-4", "provider": "OpenAI",
                "reviewed-by": "editorial-team", "date": 1745286896}) == parse_dictionary_members(value)["mode"]

    @pytest.mark.parametrize("mode", MODES)
    def test_every_mode_round_trips(self, mode: str) -> None:
        assert mode == parse_dictionary(disclosure_header(mode=mode, provider="P"))["mode"]

    def test_invalid_arguments_raise(self) -> None:
        with pytest.raises(ValueError, match="mode must be one of"):
            disclosure_header(mode="human", provider="P")
        with pytest.raises(ValueError, match="repeats a named argument"):
            disclosure_header(provider="P", extra={"mode": "x"})
        with pytest.raises(ValueError, match="aware datetime"):
            disclosure_header(provider="P", date=datetime(2025, 1, 1))
        with pytest.raises(ValueError, match="ascii_safe"):
            disclosure_header(provider="示例科技")

    def test_escapes(self) -> None:
        """Quotes and backslashes are escaped, and come back as they were."""
        value = serialize_dictionary({"s": 'say "hi" \\ bye'})

        assert 's="say \\"hi\\" \\\\ bye"' == value
        assert 'say "hi" \\ bye' == parse_dictionary(value)["s"]

    def test_types_serialise_as_rfc_9651_says(self) -> None:
        members = {
            "t": True, "f": False, "i": -42, "d": 1.5, "tok": Token("a:b/c"), "date": Date(0),
            "b": b"hi", "ds": DisplayString("füü"), "l": [1, Token("x")],
        }

        assert 't, f=?0, i=-42, d=1.5, tok=a:b/c, date=@0, b=:aGk=:, ds=%"f%c3%bc%c3%bc", l=(1 x)' == (
            serialize_dictionary(members)
        )

    @pytest.mark.parametrize(
        ("members", "message"),
        [
            ({"Upper": 1}, "key 'Upper' is invalid"),
            ({"1a": 1}, "key '1a' is invalid"),
            ({"": 1}, "key '' is invalid"),
            ({"a": Token("1abc")}, "token '1abc' is invalid"),
            ({"a": Token("a b")}, "token 'a b' is invalid"),
            ({"a": 1_000_000_000_000_000}, "out of range"),
            ({"a": Date(-1_000_000_000_000_000)}, "out of range"),
            ({"a": 1e12}, "more than 12 integer digits"),
            ({"a": float("nan")}, "must be finite"),
            ({"a": "tab\there"}, "printable ASCII only"),
            ({"a": "中文"}, "ascii_safe"),
            ({"a": None}, "unsupported type NoneType"),
        ],
    )
    def test_unrepresentable_values_raise(self, members: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            serialize_dictionary(members)

    def test_semicolon_form_cannot_carry_lists_after_the_first_member(self) -> None:
        with pytest.raises(ValueError, match="cannot be a list"):
            serialize_dictionary({"a": 1, "b": [1]}, form=";")
        with pytest.raises(ValueError, match="form must be"):
            serialize_dictionary({"a": 1}, form="&")

    def test_ascii_safe_lets_a_chinese_name_through(self) -> None:
        """A Chinese provider name is percent-encoded UTF-8 and decodes back exactly."""
        safe = ascii_safe("示例科技 100%")

        assert "%E7%A4%BA%E4%BE%8B%E7%A7%91%E6%8A%80 100%25" == safe
        assert "示例科技 100%" == unquote(parse_dictionary(disclosure_header(provider=safe))["provider"])

    @given(st.text())
    def test_ascii_safe_is_reversible_and_serialisable(self, text: str) -> None:
        safe = ascii_safe(text)
        serialize_dictionary({"p": safe})
        if not any("\ud800" <= char <= "\udfff" for char in text):
            assert text == unquote(safe, errors="strict")

    @given(DICTIONARIES)
    def test_round_trip(self, members: dict[str, Any]) -> None:
        """Anything serialised parses back to the same values with the same types."""
        assert typed(members) == typed(parse_dictionary(serialize_dictionary(members)))

    @given(DICTIONARIES)
    def test_both_forms_parse_to_the_same_mapping(self, members: dict[str, Any]) -> None:
        comma = parse_dictionary(serialize_dictionary(members, form=","))
        semicolon = parse_dictionary(serialize_dictionary(members, form=";"))

        assert sorted(typed(comma), key=repr) == sorted(typed(semicolon), key=repr)

    @pytest.mark.parametrize(
        "value",
        [
            'a="unterminated', 'a="bad \\x escape"', 'a="ends in \\', "a=1,", "a=1,,b=2", "A=1", "a=?2",
            "a=1 b=2", "a=@1.5", "a=:not base64!:", "a=:unterminated", "a=1.2345", "a=(1 2", "a=%\"%ZZ\"",
            "a=<x>", ",a=1", "a=1;", "a=é", "a=\"é\"",
        ],
    )
    def test_garbage_raises(self, value: str) -> None:
        with pytest.raises(ValueError, match="invalid structured field"):
            parse_dictionary(value)

    @given(st.text(st.characters(max_codepoint=0x7F)) | st.text())
    def test_any_text_parses_or_raises_value_error(self, text: str) -> None:
        """The parser never fails with anything but ValueError, whatever arrives in a header."""
        try:
            parse_dictionary(text)
        except ValueError:
            pass

    def test_tolerances(self) -> None:
        """Several field lines combine; a member wins over a parameter of the same name; empty is empty."""
        assert {"a": 1, "b": 2} == parse_dictionary(["a=1", "b=2"])
        assert {"a": 1, "b": 2} == parse_dictionary("a=1;b=9, b=2")
        assert {} == parse_dictionary("")
        assert {"b": b"hi"} == parse_dictionary("b=:aGk:")  # RFC 9651 §4.2.7: missing padding is accepted.
        assert {"mode": "ai-originated", "provider": "x"} == parse_dictionary('  mode=ai-originated; provider="x"  ')
        with pytest.raises(TypeError, match="latin-1"):
            parse_dictionary(b"a=1")  # type: ignore[arg-type]


# Known answers ported from httpwg/structured-field-tests (the files dictionary.json @4c3ed9d,
# param-dict.json @c143819, string.json @77fb14d, token.json @e53a138, number.json @49d2c02,
# boolean.json @8dc3644, display-string.json @6764b0a and serialize.json @0528160). Item tests are
# wrapped as the value of a member "a". None means the test's "must_fail".
SF_DICTIONARIES: list[tuple[str, list[str], dict[str, Any] | None]] = [
    ("basic dictionary", ['en="Applepie", da=:w4ZibGV0w6ZydGUK:'],
     {"en": ("Applepie", {}), "da": (base64.b32decode("YODGE3DFOTB2M4TUMUFA===="), {})}),
    ("empty dictionary", [""], {}),
    ("single item dictionary", ["a=1"], {"a": (1, {})}),
    ("list item dictionary", ["a=(1 2)"], {"a": ([(1, {}), (2, {})], {})}),
    ("empty list item dictionary", ["a=()"], {"a": ([], {})}),
    ("no whitespace dictionary", ["a=1,b=2"], {"a": (1, {}), "b": (2, {})}),
    ("extra whitespace dictionary", ["a=1 ,  b=2"], {"a": (1, {}), "b": (2, {})}),
    ("tab separated dictionary", ["a=1\t,\tb=2"], {"a": (1, {}), "b": (2, {})}),
    ("leading whitespace dictionary", ["     a=1 ,  b=2"], {"a": (1, {}), "b": (2, {})}),
    ("whitespace before = dictionary", ["a =1, b=2"], None),
    ("whitespace after = dictionary", ["a=1, b= 2"], None),
    ("two lines dictionary", ["a=1", "b=2"], {"a": (1, {}), "b": (2, {})}),
    ("missing value dictionary", ["a=1, b, c=3"], {"a": (1, {}), "b": (True, {}), "c": (3, {})}),
    ("missing value with params dictionary", ["a=1, b;foo=9, c=3"],
     {"a": (1, {}), "b": (True, {"foo": 9}), "c": (3, {})}),
    ("trailing comma dictionary", ["a=1, b=2,"], None),
    ("empty item dictionary", ["a=1,,b=2,"], None),
    ("duplicate key dictionary", ["a=1,b=2,a=3"], {"a": (3, {}), "b": (2, {})}),
    ("numeric key dictionary", ["a=1,1b=2,a=1"], None),
    ("uppercase key dictionary", ["a=1,B=2,a=1"], None),
    ("bad key dictionary", ["a=1,b!=2,a=1"], None),
    ("basic parameterised dict", ['abc=123;a=1;b=2, def=456, ghi=789;q=9;r="+w"'],
     {"abc": (123, {"a": 1, "b": 2}), "def": (456, {}), "ghi": (789, {"q": 9, "r": "+w"})}),
    ("single item parameterised dict", ["a=b; q=1.0"], {"a": (Token("b"), {"q": 1.0})}),
    ("missing parameter value parameterised dict", ["a=3;c;d=5"], {"a": (3, {"c": True, "d": 5})}),
    ("whitespace before = parameterised dict", ["a=b;q =0.5"], None),
    ("whitespace after = parameterised dict", ["a=b;q= 0.5"], None),
    ("whitespace before ; parameterised dict", ["a=b ;q=0.5"], None),
    ("extra whitespace parameterised dict", ["a=b;  c=1  ,  d=e; f=2; g=3"],
     {"a": (Token("b"), {"c": 1}), "d": (Token("e"), {"f": 2, "g": 3})}),
]
SF_ITEMS: list[tuple[str, str, Any]] = [
    ("basic string", '"foo bar"', "foo bar"),
    ("empty string", '""', ""),
    ("whitespace string", '"   "', "   "),
    ("non-ascii string", '"füü"', None),
    ("tab in string", '"\t"', None),
    ("single quoted string", "'foo'", None),
    ("unbalanced string", '"foo', None),
    ("string quoting", '"foo \\"bar\\" \\\\ baz"', 'foo "bar" \\ baz'),
    ("bad string quoting", '"foo \\,"', None),
    ("ending string quote", '"foo \\"', None),
    ("abruptly ending string quote", '"foo \\', None),
    ("basic token", "a_b-c.d3:f%00/*", Token("a_b-c.d3:f%00/*")),
    ("token starting with capitals", "FooBar", Token("FooBar")),
    ("basic integer", "42", 42),
    ("leading 0 zero", "00", 0),
    ("negative zero", "-0", 0),
    ("double negative zero", "--0", None),
    ("leading 0 negative integer", "-042", -42),
    ("negative non-DIGIT first character", "-a23", None),
    ("sign out of place", "4-2", None),
    ("long integer", "123456789012345", 123456789012345),
    ("too long integer", "1234567890123456", None),
    ("negative decimal", "-1.23", -1.23),
    ("decimal, whitespace after decimal", "1. 23", None),
    ("tricky precision decimal", "123456789012.1", 123456789012.1),
    ("double decimal decimal", "1.5.4", None),
    ("decimal with four fractional digits", "1.1234", None),
    ("decimal with thirteen integer digits", "1234567890123.0", None),
    ("basic true boolean", "?1", True),
    ("basic false boolean", "?0", False),
    ("unknown boolean", "?Q", None),
    ("whitespace boolean", "? 1", None),
    ("basic display string (ascii content)", '%"foo bar"', DisplayString("foo bar")),
    ("non-ascii display string (uppercase escaping)", '%"f%C3%BC%C3%BC"', None),
    ("non-ascii display string (lowercase escaping)", '%"f%c3%bc%c3%bc"', DisplayString("füü")),
    ("unquoted display string", "%foo", None),
    ("display string quoting", '%"foo %22bar%22 \\ baz"', DisplayString('foo "bar" \\ baz')),
    ("bad display string utf-8 (invalid 2-byte seq)", '%"%c3%28"', None),
    ("BOM in display string", '%"BOM: %ef%bb%bf"', DisplayString("BOM: \ufeff")),
]
SF_SERIALISE = [(0.0015, "0.002"), (0.0025, "0.002"), (-0.0015, "-0.002"), (-0.0025, "-0.002"), (9.9995, "10.0")]


class TestStructuredFieldTests:
    @pytest.mark.parametrize(("name", "raw", "expected"), SF_DICTIONARIES, ids=[c[0] for c in SF_DICTIONARIES])
    def test_dictionaries(self, name: str, raw: list[str], expected: dict[str, Any] | None) -> None:
        if expected is None:
            with pytest.raises(ValueError):
                parse_dictionary_members(raw)
        else:
            assert expected == parse_dictionary_members(raw)

    @pytest.mark.parametrize(("name", "raw", "expected"), SF_ITEMS, ids=[c[0] for c in SF_ITEMS])
    def test_items(self, name: str, raw: str, expected: Any) -> None:
        if expected is None:
            with pytest.raises(ValueError):
                parse_dictionary_members(f"a={raw}")
        else:
            value, params = parse_dictionary_members(f"a={raw}")["a"]
            assert (type(expected), expected, {}) == (type(value), value, params)

    @pytest.mark.parametrize(("value", "canonical"), SF_SERIALISE)
    def test_decimals_round_half_even(self, value: float, canonical: str) -> None:
        assert f"a={canonical}" == serialize_dictionary({"a": value})


# --- Settings ------------------------------------------------------------------------------------


class TestSettings:
    def test_template_with_a_minimal_profile_is_valid(self, settings: DisclosureSettings) -> None:
        """The pasted TEMPLATE and a three-section profile load; defaults fill the rest."""
        assert ("mailto:ops@t.example",) == settings.security.contact
        assert settings.security.expires is None
        assert "zh, en" == settings.security.preferred_languages
        assert ("ai-originated", ",", "zh", "aiob_subject") == (
            settings.mode, settings.header_form, settings.language, settings.cookie_name
        )
        assert settings.notice is None and settings.first_contact_notice is None
        t = settings.transparency
        assert "GB 45438" in t.labelling.zh and "C2PA" in t.labelling.en and "watermark" in t.labelling.en
        assert "183" in t.data_retention.zh and "183 days" in t.data_retention.en
        assert "知识产权" in t.ip_notice.zh and "/ai/complaints" in t.ip_notice.en
        assert "/ai/explanations" in t.remedies.zh
        assert "{" not in TEMPLATE and "}" not in TEMPLATE  # keys.CONFIG_TEMPLATE goes through str.format.

    def test_missing_fields_are_named_all_at_once(self, tmp_path: Path) -> None:
        text = MINIMAL + '[transparency]\npurpose = "x"\n[security]\nexpires = 2020-01-01T00:00:00Z\n' \
            '[disclosure]\nmode = "human"\nheader_form = "|"\n'

        with pytest.raises(ConfigurationError) as caught:
            settings_for(tmp_path, base=text)

        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'aiobligations.toml'}: ")
        for field in ("principles", "mechanism", "user_rights", "remedies", "ip_notice"):
            assert f"[transparency] {field} is missing" in message
        assert "purpose is missing" not in message
        assert "[security] expires 2020-01-01T00:00:00Z is in the past" in message
        assert "[disclosure] mode must be one of" in message and "[disclosure] header_form" in message

    def test_misspelt_keys_are_named(self, tmp_path: Path) -> None:
        """An optional key spelt wrong would otherwise be ignored in silence."""
        text = (MINIMAL + TEMPLATE).replace("[security]", '[security]\ncontacts = "x"')
        with pytest.raises(ConfigurationError) as caught:
            settings_for(tmp_path, base=text.replace("[transparency]", '[transparency]\nlabeling = "x"'))

        assert "[transparency] labeling is not a known key (did you mean labelling?)" in str(caught.value)
        assert "[security] contacts is not a known key (did you mean contact?)" in str(caught.value)

    def test_a_missing_section_says_what_it_needs(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match=r"the \[transparency\] section is missing: it needs purpose"):
            settings_for(tmp_path, base=MINIMAL)

    def test_texts_are_strings_or_language_tables(self, tmp_path: Path) -> None:
        base = MINIMAL + drop_lines(TEMPLATE, "purpose.")
        settings = settings_for(tmp_path, base=base.replace("[transparency]", '[transparency]\npurpose = "Both."'))
        assert Text("Both.", "Both.") == settings.transparency.purpose
        settings = settings_for(tmp_path, base=base.replace("[transparency]", '[transparency]\npurpose.zh = "中文"'))
        assert "中文" == settings.transparency.purpose.get("en")
        with pytest.raises(ConfigurationError, match="purpose has unknown language keys zn"):
            settings_for(tmp_path, base=base.replace("[transparency]", '[transparency]\npurpose.zn = "x"'))
        with pytest.raises(ConfigurationError, match="purpose must be a string or a table"):
            settings_for(tmp_path, base=base.replace("[transparency]", "[transparency]\npurpose = 3"))

    @pytest.mark.parametrize(
        ("security", "message"),
        [
            ('contact = "ftp://x"', "contact 'ftp://x' must be a URI starting with mailto:"),
            ("contact = []", "contact must name at least one URI"),
            ('policy = "http://x"', "policy 'http://x' must be a URI starting with https://"),
            ('expires = "soon"', "expires must be an RFC 3339 time with a zone"),
            ("expires = 2027-01-01T00:00:00", "expires must be an RFC 3339 time with a zone"),
            ('preferred_languages = "zh; en"', "preferred_languages must be language tags"),
        ],
    )
    def test_security_errors(self, tmp_path: Path, security: str, message: str) -> None:
        text = MINIMAL + TEMPLATE.replace('preferred_languages = "zh, en"', security)
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            settings_for(tmp_path, base=text)

    def test_security_fields(self, tmp_path: Path) -> None:
        text = MINIMAL + TEMPLATE.replace('preferred_languages = "zh, en"', "\n".join([
            'contact = ["mailto:security@t.example", "https://t.example/security"]',
            'expires = "2026-06-30T12:00:00+08:00"',
            'preferred_languages = "zh-CN,en"',
            'policy = "https://t.example/policy"',
            'acknowledgments = ["https://t.example/thanks"]',
            'canonical = "https://t.example/.well-known/security.txt"',
        ]))
        security = settings_for(tmp_path, base=text).security

        assert ("mailto:security@t.example", "https://t.example/security") == security.contact
        assert datetime(2026, 6, 30, 4, tzinfo=timezone.utc) == security.expires
        assert "zh-CN, en" == security.preferred_languages
        assert ("https://t.example/policy",) == security.policy

    def test_contact_must_be_given_when_the_providers_is_not_an_address(self, tmp_path: Path) -> None:
        text = (MINIMAL + TEMPLATE).replace('contact = "ops@t.example"', 'contact = "call us"')
        with pytest.raises(ConfigurationError, match=r"\[security\] contact is missing"):
            settings_for(tmp_path, base=text)

    def test_custom_notices_must_say_ai_and_stay_short(self, tmp_path: Path) -> None:
        good = '\nnotice = { zh = "这是人工智能。", en = "This is an AI." }\n' \
            'first_contact_notice = "AI 人工智能 {transparency_url}"\n'
        settings = settings_for(tmp_path, good)
        assert "This is an AI." == short_notice(settings, "en")
        assert "AI 人工智能 /t" == first_contact_notice(settings, "zh", transparency_url="/t")
        with pytest.raises(ConfigurationError) as caught:
            settings_for(tmp_path, '\nnotice = { zh = "这是机器。", en = "' + "x" * 200 + '" }\n')
        assert "notice zh must say 人工智能" in str(caught.value)
        assert "notice en must say AI" in str(caught.value) and "keep it under 160" in str(caught.value)

    def test_disclosure_options(self, tmp_path: Path) -> None:
        text = (MINIMAL + TEMPLATE).replace('header_form = ","', 'header_form = ";"').replace(
            'language = "zh"', 'language = "en"').replace('cookie_name = "aiob_subject"', 'cookie_name = "seen"')
        settings = settings_for(tmp_path, base=text)
        assert (";", "en", "seen") == (settings.header_form, settings.language, settings.cookie_name)
        with pytest.raises(ConfigurationError, match="cookie_name must be a cookie name"):
            settings_for(tmp_path, base=text.replace('"seen"', '"a b"'))


# --- Notices -------------------------------------------------------------------------------------


def luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


class Balanced(HTMLParser):
    """Checks that every non-void element is closed in order, and records tags and attributes."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and tag == self.stack.pop(), f"unbalanced </{tag}>"


def parse_html(text: str) -> Balanced:
    parser = Balanced()
    parser.feed(text)
    parser.close()
    assert [] == parser.stack
    return parser


class TestNotices:
    def test_built_in_short_notices_are_short_and_say_ai(self, settings: DisclosureSettings) -> None:
        zh, en = short_notice(settings, "zh"), short_notice(settings, "en")

        assert "人工智能" in zh and len(zh) <= 80
        assert "AI" in en and len(en) <= 80
        assert zh == short_notice(settings, "fr")

    def test_first_contact_notice_names_the_page_and_the_risks(self, settings: DisclosureSettings) -> None:
        zh = first_contact_notice(settings, "zh", transparency_url="/ai/transparency")
        en = first_contact_notice(settings, "en", transparency_url="https://t.example/ai/transparency")

        assert "/ai/transparency" in zh and "错误" in zh and "解释" in zh and "投诉" in zh
        assert "https://t.example/ai/transparency" in en and "wrong" in en and "complaint" in en
        with pytest.raises(ValueError, match="transparency_url"):
            first_contact_notice(settings, "en", transparency_url="javascript:alert(1)")

    @pytest.mark.parametrize("first_contact", [True, False])
    def test_banner_is_accessible_escaped_and_script_free(
        self, settings: DisclosureSettings, first_contact: bool
    ) -> None:
        banner = banner_html(
            settings, "en", transparency_url="/ai/transparency?x=1&y=<2>",
            interaction_id='<script>alert("x")</script>', first_contact=first_contact,
        )

        parsed = parse_html(banner)
        tag, attrs = parsed.tags[0]
        assert ("aside", "note", "AI notice", "en") == (tag, attrs["role"], attrs["aria-label"], attrs["lang"])
        assert "<script" not in banner and "&lt;script&gt;" in banner
        assert 'href="/ai/transparency?x=1&amp;y=&lt;2&gt;"' in banner
        assert ("Interaction number" in banner) and (first_contact == ("transparency page" in banner))
        colours = dict(re.findall(r"(?<![-\w])(background|color):(#[0-9a-f]{6})", banner))
        link = re.search(r'<a [^>]*color:(#[0-9a-f]{6})', banner)
        assert link is not None
        assert contrast(colours["color"], colours["background"]) >= 4.5
        assert contrast(link.group(1), colours["background"]) >= 4.5
        assert "font:16px" in banner

    def test_chinese_banner(self, settings: DisclosureSettings) -> None:
        banner = banner_html(settings, "zh", transparency_url="/ai/transparency", interaction_id="id-1",
                             first_contact=False)
        assert 'aria-label="人工智能提示"' in banner and "交互编号：<code>id-1</code>。" in banner

    @pytest.mark.parametrize(
        ("mode", "value"),
        [("none", "none"), ("ai-modified", "ai-assisted"), ("ai-originated", "ai-generated"),
         ("machine-generated", "autonomous")],
    )
    def test_meta_tag_maps_modes_to_the_w3c_values(self, mode: str, value: str) -> None:
        assert f'<meta name="ai-disclosure" content="{value}">' == meta_tag(mode)

    def test_meta_tag_rejects_unknown_modes(self) -> None:
        with pytest.raises(ValueError, match="mode must be one of"):
            meta_tag("mixed")


# --- The transparency document and page ----------------------------------------------------------


class TestDocument:
    def test_every_article_38_3_element_is_present(self, profile: Profile, settings: DisclosureSettings) -> None:
        document = transparency_document(profile, settings, verifier_key=VERIFIER, origin="t.example/log")

        # (一) principles, purpose, mechanism; (二) licence / filing; (三) rights and remedies.
        for key in ("purpose", "principles", "mechanism", "user_rights", "ip_notice", "labelling", "data_retention"):
            assert {"zh", "en"} == set(document[key]) and all(document[key].values()), key
        assert {"licence_number": "", "filing_number": ""} == document["registration"]
        assert {"explanations": "/ai/explanations", "complaints": "/ai/complaints", "form": "/ai/requests",
                "contact": "ops@t.example"} == {
            k: v for k, v in document["remedies"].items() if k != "text"
        }
        assert {"zh", "en"} == set(document["remedies"]["text"])
        assert {"name": "Test Co", "name_zh": "", "code": "", "contact": "ops@t.example", "website": ""} == (
            document["provider"]
        )
        assert "Test Service" == document["service"]["name"]
        assert {"origin": "t.example/log", "verifier_key": VERIFIER, "checkpoint_url": "/ai/checkpoint"} == (
            document["ledger"]
        )
        assert {"html": "/ai/transparency", "json": "/.well-known/ai-transparency",
                "security_txt": "/.well-known/security.txt"} == document["links"]
        assert "AI Model Law 2.0 (expert draft)" == document["law"]["name"]["en"]
        assert {"31", "38", "39", "47", "70"} <= set(document["law"]["articles"])
        assert document == json.loads(json.dumps(document, ensure_ascii=False))

    def test_version_names_the_content(self, profile: Profile, settings: DisclosureSettings) -> None:
        one = transparency_document(profile, settings, verifier_key=VERIFIER, origin="t.example/log")
        again = transparency_document(profile, settings, verifier_key=VERIFIER, origin="t.example/log")
        other = transparency_document(profile, settings, prefix="/compliance", verifier_key=VERIFIER,
                                      origin="t.example/log")

        assert re.fullmatch(r"sha256:[0-9a-f]{16}", one["version"])
        assert one["version"] == again["version"] == document_version(one)
        assert one["version"] != other["version"]
        assert "/compliance/explanations" == other["remedies"]["explanations"]
        with pytest.raises(ValueError, match="prefix must start with '/'"):
            transparency_document(profile, settings, prefix="ai/", verifier_key=VERIFIER, origin="o")


HOSTILE = '<script>alert("x")</script>'


class TestPage:
    @pytest.fixture(name="document")
    def _document(self, tmp_path: Path) -> dict[str, Any]:
        hostile_provider = f"name = '{HOSTILE}'\nwebsite = \"javascript:alert(1)\""
        text = (MINIMAL + TEMPLATE).replace('name = "Test Co"', hostile_provider)
        text = text.replace('name = "Test Service"', 'name = "Svc \\" onmouseover=\\"x"\nfiling_number = "<b>F-1</b>"')
        text = text.replace("[transparency]", '[transparency]\nmechanism = "</section><script>bad()</script>"')
        text = drop_lines(text, "mechanism.")
        profile = write_profile(tmp_path, text)
        settings = DisclosureSettings.from_profile(profile, now=NOW)
        return transparency_document(profile, settings, verifier_key=VERIFIER, origin="t.example/log")

    @pytest.mark.parametrize("lang", ["zh", "en"])
    def test_hostile_values_are_escaped(self, document: dict[str, Any], lang: str) -> None:
        page = render_transparency_page(document, lang)

        tags = parse_html(page).tags
        assert "<script" not in page.lower() and "script" not in [tag for tag, _ in tags]
        hrefs = [str(attrs.get("href")) for tag, attrs in tags if tag == "a"]
        assert hrefs and not [href for href in hrefs if not href.startswith(("/", "?", "https://", "mailto:"))]
        assert "mailto:ops@t.example" in hrefs
        assert "<dd>javascript:alert(1)</dd>" in page  # Shown as text, never linked.
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
        assert "&lt;/section&gt;&lt;script&gt;bad()&lt;/script&gt;" in page
        assert "&lt;b&gt;F-1&lt;/b&gt;" in page and 'onmouseover="x"' not in page

    def test_only_safe_links_from_any_document(self) -> None:
        """A document from elsewhere cannot smuggle script URLs into links."""
        document = {
            "provider": {"contact": "javascript:alert(1)", "website": "//evil.example"},
            "remedies": {"contact": "x@y.example", "explanations": "javascript:a()", "complaints": "/c"},
            "ledger": {"checkpoint_url": "/\\evil.example"},
            "links": {"json": "data:text/html,x", "security_txt": "/s"},
        }

        page = render_transparency_page(document, "en")

        hrefs = [str(attrs.get("href")) for tag, attrs in parse_html(page).tags if tag == "a"]
        assert ["?lang=zh", "mailto:x@y.example", "#", "/s"] == hrefs
        assert "<dd>javascript:alert(1)</dd>" in page and "<dd>//evil.example</dd>" in page

    @pytest.mark.parametrize(("lang", "html_lang", "switch"), [("zh", "zh-CN", "?lang=en"), ("en", "en", "?lang=zh")])
    def test_structure(self, profile: Profile, settings: DisclosureSettings, lang: str, html_lang: str,
                       switch: str) -> None:
        document = transparency_document(profile, settings, verifier_key=VERIFIER, origin="t.example/log")
        page = render_transparency_page(document, lang)

        assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</html>\n")
        tags = parse_html(page).tags
        names = [tag for tag, _ in tags]
        assert ("html", html_lang) == (tags[0][0], tags[0][1]["lang"])
        assert {"header", "nav", "main", "footer", "dl", "dt", "dd", "h2"} <= set(names)
        assert 1 == names.count("h1") and names.count("h2") >= 10
        assert any(tag == "a" and attrs.get("href") == switch for tag, attrs in tags)
        assert not {"script", "link", "img", "iframe"} & set(names)
        assert "src=" not in page and "url(" not in page
        assert document["version"] in page and VERIFIER in page
        assert document["purpose"][lang] in page
        assert "font:18px" in page
        for foreground in ("#1a1a1a", "#0b4f9c"):
            assert contrast(foreground, "#ffffff") >= 7

    @pytest.mark.parametrize(
        ("accept", "query", "default", "expected"),
        [
            (None, None, "zh", "zh"),
            (None, None, "en", "en"),
            ("", None, "en", "en"),
            ("en-US,en;q=0.9", None, "zh", "en"),
            ("zh-CN,zh;q=0.9,en;q=0.8", None, "en", "zh"),
            ("zh-Hans", None, "en", "zh"),
            ("zh-Hant-TW", None, "en", "zh"),
            ("EN-gb", None, "zh", "en"),
            ("fr-FR, en;q=0.5", None, "zh", "en"),
            ("fr", None, "zh", "zh"),
            ("en;q=0.2, zh;q=0.8", None, "en", "zh"),
            ("en;q=0.8, zh;q=0.8", None, "zh", "en"),
            ("zh;q=0, *", None, "zh", "en"),
            ("*", None, "en", "en"),
            ("en;q=0", None, "en", "zh"),
            ("en;q=abc, zh", None, "en", "zh"),
            ("en;q=1.0001, zh;q=0.1", None, "en", "zh"),
            ("en", "zh", "en", "zh"),
            ("zh", "en-US", "zh", "en"),
            ("zh", "fr", "en", "zh"),
            ("garbage;;;,,", None, "en", "en"),
        ],
    )
    def test_negotiate_language(self, accept: str | None, query: str | None, default: str, expected: str) -> None:
        assert expected == negotiate_language(accept, query, default)


# --- security.txt --------------------------------------------------------------------------------


class TestSecurityTxt:
    def test_default_fields_and_expiry(self, settings: DisclosureSettings) -> None:
        now = datetime.now(timezone.utc)
        text = security_txt(settings, now=now)

        assert text.endswith("\n") and "\r" not in text
        fields = [line.split(": ", 1) for line in text.splitlines()]
        assert ["Contact", "Expires", "Preferred-Languages"] == [name for name, _ in fields]
        values = dict(fields)
        assert "mailto:ops@t.example" == values["Contact"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", values["Expires"])
        expires = datetime.strptime(values["Expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert now < expires <= now + timedelta(days=180)
        assert expires < now + timedelta(days=365)
        assert "zh, en" == values["Preferred-Languages"]

    def test_configured_fields(self, tmp_path: Path) -> None:
        text = MINIMAL + TEMPLATE.replace('preferred_languages = "zh, en"', "\n".join([
            'contact = ["mailto:security@t.example", "tel:+86-10-0000-0000"]',
            "expires = 2026-06-30T12:00:00Z",
            'policy = "https://t.example/policy"',
            'acknowledgments = "https://t.example/thanks"',
            'canonical = "https://t.example/.well-known/security.txt"',
            'encryption = "https://t.example/pgp.asc"',
        ]))
        settings = settings_for(tmp_path, base=text)

        assert (
            "Contact: mailto:security@t.example\n"
            "Contact: tel:+86-10-0000-0000\n"
            "Expires: 2026-06-30T12:00:00Z\n"
            "Encryption: https://t.example/pgp.asc\n"
            "Acknowledgments: https://t.example/thanks\n"
            "Preferred-Languages: zh, en\n"
            "Canonical: https://t.example/.well-known/security.txt\n"
            "Policy: https://t.example/policy\n"
        ) == security_txt(settings, now=NOW)
