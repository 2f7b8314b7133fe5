"""Find personal data (PII) in rows, mask it for reports, and redact it.

Why regexes with validation: a scan that cries wolf on every order number or version string gets
switched off, so each detector is tuned for precision first. A candidate found by a loose pattern
must also pass a check only real values pass: Luhn and a card-network prefix for cards, mod-97 and
the country's length for IBANs, valid SSN areas, octet ranges for IPv4, `ipaddress` for IPv6, and
shape and context rules for phone numbers (which have no checksum).

Decisions (what is deliberately *not* reported):

- phone: 9-15 digits with a leading + or 00 (international), 9-12 digits otherwise. A national number
  needs phone-like formatting (separators or an area code in parentheses), or a word such as "phone",
  "tel" or "call" just before it; a bare run of digits is an id, not a phone. Dates, times, ISBNs,
  decimal and thousand-grouped numbers, SSN-shaped numbers, numbers after a currency sign and numbers
  after "order", "invoice", "ref", "tracking", "account", "id", "#", "version" ... are not phones.
- national_id: US SSNs written ddd-dd-dddd (or with spaces / no separator right after "SSN" or
  "social security"), excluding areas 000, 666 and 900-999, group 00 and serial 0000, and numbers
  after "order", "serial", "ref", ... as for phones; UK National Insurance numbers (two prefix
  letters by HMRC's rules, six digits, suffix A-D, upper-case). No other countries.
- ip_address: IPv4 with octets 0-255 and no leading zeros, except addresses that identify no host
  (0.0.0.0, 127.x loopback, multicast, 240.0.0.0/4 and netmasks such as 255.255.255.0) and dotted
  quads after "version", "v", "build", "release", "section" (1.2.3.4 in "version 1.2.3.4" is a
  version). IPv6 as validated by `ipaddress`, except :: and ::1; at least two non-empty groups.
- email: the domain needs a letter TLD, and image/web-asset extensions are not TLDs (icon@2x.png).
- iban: upper-case, either compact or in groups of four, mod-97 == 1, the country's registered length.
- credit_card: 13-19 digits, compact or in the printed groupings (4-4-4-4, 4-6-5, ...), Luhn, and a
  known prefix (Visa 4, Mastercard 51-55 / 2221-2720, Amex 34/37, Discover 6011/644-649/65).

The raw value of a match never leaves this module: findings carry a masked preview and offsets.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tunelab.errors import ConfigError

ENTITIES = ("email", "phone", "credit_card", "iban", "national_id", "ip_address")
PRESIDIO_ENTITIES = {"PERSON": "person", "LOCATION": "location"}
PLACEHOLDERS = {
    "email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CREDIT_CARD]", "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]", "ip_address": "[IP_ADDRESS]", "person": "[PERSON]", "location": "[LOCATION]",
}


@dataclass(frozen=True)
class Match:
    """One PII value inside a string: its kind and character span (the value itself stays in the text)."""

    entity: str
    start: int
    end: int


@dataclass
class Finding:
    """One PII value in a row, safe to log: `preview` is masked and the raw value is not kept."""

    split: str
    row: int  # 0-based row index in the split as loaded
    field: str  # path into the row: "text", "messages[2].content"
    entity: str
    start: int  # character offsets inside that field's string
    end: int
    preview: str
    where: str  # human location: "data/train.jsonl line 17"


# --------------------------------------------------------------------------- context words

def _context(words: str) -> re.Pattern[str]:
    """Words that, just before a candidate (ignoring a few separators), say what kind of number it is."""
    pattern = rf"(?:^|[^\w])(?:{words})(?:\s*(?:no\.?|number|num|nr\.?|id|#))?\s*[:#=.-]?\s*$"
    return re.compile(pattern, re.IGNORECASE)


_OTHER_NUMBER = _context(
    r"order|invoice|inv|ref|reference|tracking|sku|serial|isbn|issn|ticket|case|account|acct|transaction|txn|"
    r"id|doi|po|version|ver\.?|v|release|build|patch|item|product|part|model|zip|postcode|postal code"
)
_A_PHONE = _context(
    r"phone|telephone|tel\.?|mobile|mob\.?|cell|call(?:\s+me|\s+us)?(?:\s+(?:at|on))?|fax|whatsapp|sms|"
    r"text(?:\s+me|\s+us)?(?:\s+(?:at|on))?|ring(?:\s+me)?(?:\s+on)?|contact(?:\s+me)?(?:\s+(?:at|on))?"
)
_NOT_AN_IP = _context(r"version|ver\.?|v|release|build|firmware|update(?:d)?(?:\s+to)?|upgrade(?:d)?(?:\s+to)?|"
                      r"section|chapter|clause|step|figure|fig\.?|table|rule|§")
_SSN_CONTEXT = re.compile(
    r"(?:ssn|social\s+security(?:\s+number)?|soc\.?\s*sec\.?)\s*(?:no\.?|number|#)?\s*[:#=-]?\s*$", re.IGNORECASE
)
_CURRENCY_BEFORE = re.compile(r"[$€£¥₹]\s?$|(?:usd|eur|gbp|chf|jpy|inr)\s?$", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(
    r"^\s?(?:[$€£¥₹]|(?:usd|eur|gbp|chf|jpy|inr|dollars?|euros?|pounds?|yen)\b)", re.IGNORECASE
)


def _before(text: str, start: int, width: int = 32) -> str:
    return text[max(0, start - width):start]


# --------------------------------------------------------------------------- email

_EMAIL = re.compile(
    r"(?<![\w.+%-])([A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))(?![\w-]|\.[A-Za-z0-9])"
)
_ASSET_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "css", "js", "json",
                     "html", "htm", "woff", "woff2", "ttf", "map"}


def _emails(text: str) -> Iterator[Match]:
    for m in _EMAIL.finditer(text):
        local, tld = m.group(1), m.group(3)
        if ".." in local or tld.lower() in _ASSET_EXTENSIONS:
            continue
        yield Match("email", m.start(), m.end())


# --------------------------------------------------------------------------- credit cards

_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_CARD_GROUPINGS = {(4, 6, 5), (4, 6, 4)}


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a digit string, as card numbers carry it."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The card network whose prefix (IIN) and length `digits` has: visa, mastercard, amex, discover."""
    n = len(digits)
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720) and n == 16:
        return "mastercard"
    if digits[:2] in ("34", "37") and n == 15:
        return "amex"
    if (digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    return None


def _card_grouping_ok(value: str) -> bool:
    separators = set(re.findall(r"[ -]", value))
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = tuple(len(g) for g in re.split(r"[ -]", value))
    if groups in _CARD_GROUPINGS:
        return True
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4 and len(groups) >= 4


def _cards(text: str) -> Iterator[Match]:
    for m in _CARD.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        if _card_grouping_ok(value) and card_network(digits) and luhn_ok(digits):
            yield Match("credit_card", m.start(), m.end())


# --------------------------------------------------------------------------- IBAN

# Lengths from the SWIFT IBAN registry (country code -> total length).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d{2}(?: ?[A-Z0-9]){11,30}")


def iban_ok(value: str) -> bool:
    """mod-97 == 1 and the registered length of the country (spaces ignored, upper-case expected)."""
    compact = value.replace(" ", "")
    if len(compact) != IBAN_LENGTHS.get(compact[:2], -1) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _iban_end(text: str, start: int, length: int) -> int | None:
    """End offset of the first `length` alphanumerics from `start`, when a word boundary follows them."""
    count = 0
    for pos in range(start, len(text)):
        if text[pos].isalnum():
            count += 1
            if count == length:
                end = pos + 1
                return end if end == len(text) or not text[end].isalnum() else None
        elif text[pos] != " ":
            return None
    return None


def _ibans(text: str) -> Iterator[Match]:
    pos = 0
    while (m := _IBAN.search(text, pos)) is not None:
        pos = m.start() + 1  # the candidate is greedy: a real IBAN may start inside a rejected one
        length = IBAN_LENGTHS.get(m.group(1))
        end = _iban_end(text, m.start(), length) if length else None
        if end is None:
            continue
        value = text[m.start():end]
        groups = value.split(" ")
        spaced_ok = len(groups) == 1 or (all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4)
        if spaced_ok and iban_ok(value):
            yield Match("iban", m.start(), end)
            pos = end


# --------------------------------------------------------------------------- national ids

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_NINO = re.compile(r"(?<![A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])( ?)(\d{2})\2(\d{2})\2(\d{2})\2([A-D])"
                   r"(?![A-Za-z0-9])")
_NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """US SSN rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _national_ids(text: str) -> Iterator[Match]:
    for m in _SSN.finditer(text):
        before = _before(text, m.start())
        if m.group(2) != "-" and not _SSN_CONTEXT.search(before) or _OTHER_NUMBER.search(before):
            continue
        if ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield Match("national_id", m.start(), m.end())
    for m in _NINO.finditer(text):
        if m.group(1) not in _NINO_BAD_PREFIXES:
            yield Match("national_id", m.start(), m.end())


# --------------------------------------------------------------------------- IP addresses

_IPV4 = re.compile(r"(?<![\w.:])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?)(?![\w:]|\.\d)")
_MASK_OCTETS = {"0", "128", "192", "224", "240", "248", "252", "254", "255"}


def _ipv4_ok(octets: tuple[str, ...]) -> bool:
    if any(len(o) > 1 and o[0] == "0" for o in octets) or any(int(o) > 255 for o in octets):
        return False
    if octets[0] == "255" and all(o in _MASK_OCTETS for o in octets):
        return False  # a netmask
    address = ipaddress.IPv4Address(".".join(octets))
    return not (address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved)


def _ipv6_ok(value: str) -> bool:
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    groups = [g for g in value.split(":") if g]
    if len(groups) < 2 or max(len(g) for g in groups) < 2:
        return False
    return not (address.is_unspecified or address.is_loopback)


def _ips(text: str) -> Iterator[Match]:
    for m in _IPV4.finditer(text):
        if _ipv4_ok(m.groups()) and not _NOT_AN_IP.search(_before(text, m.start())):
            yield Match("ip_address", m.start(), m.end())
    for m in _IPV6.finditer(text):
        if _ipv6_ok(m.group(1)):
            yield Match("ip_address", m.start(), m.end())


# --------------------------------------------------------------------------- phone numbers

_PHONE = re.compile(
    r"""(?<![\w+#/=.,$€£¥@%-])
    (?:\+\s?\d{1,3}[ .-]?|1[ .-]?(?=\())?     # +CC, or a US trunk 1 before "(area)"
    (?:\(\s?\d{1,5}\s?\)[ .-]?)?              # (area)
    \d{1,12}(?:[ .-]\d{1,8}){0,6}
    (?![\w@]|[.,:/-]\d)""",
    re.VERBOSE,
)
_DATE_INSIDE = re.compile(
    r"(?:19|20)\d\d[-. ](?:0?[1-9]|1[0-2])[-. ](?:0?[1-9]|[12]\d|3[01])(?!\d)"
    r"|(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-. ](?:0?[1-9]|1[0-2])[-. ](?:19|20)\d\d"
)
_IBAN_PREFIX = re.compile(r"[A-Z]{2}\d{2}(?: [A-Z0-9]{4})+ $")


def _phone_ok(text: str, start: int, end: int) -> bool:
    value = text[start:end]
    before = _before(text, start)
    intl = re.match(r"\+|00[1-9]", value) is not None
    digits = sum(ch.isdigit() for ch in value)
    if not 9 <= digits <= (15 if intl else 12):
        return False
    if _OTHER_NUMBER.search(before) or _IBAN_PREFIX.search(before) or _near_currency(text, start, end):
        return False
    groups = re.findall(r"\d+", value)
    if intl:
        return _national_groups_ok(groups[1:], value)
    if len(groups) == 1:  # a bare run of digits is an id unless the text says it is a phone
        return bool(_A_PHONE.search(before))
    if re.fullmatch(r"\d{3}-\d{2}-\d{4}", value) or _DATE_INSIDE.search(value):
        return False  # an SSN's shape, or a date
    if len(groups) >= 4 and all(len(g) == 2 for g in groups) and (len(groups) != 5 or groups[0][0] != "0"):
        return False  # numbers in pairs are phones only as five pairs with the trunk 0 (01 23 45 67 89)
    thousands = len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])
    if thousands and (len(groups) != 3 or len(groups[0]) < 3 or groups[-1] == "000"):
        return False  # thousands grouping (1 234 567 890); only 612 345 678 is a phone shape
    return _national_groups_ok(groups, value)


def _national_groups_ok(groups: list[str], value: str) -> bool:
    """Group shape of the number after any country code: no lone digits past the first group."""
    if len(groups) <= 1:
        return True
    if any(len(g) == 1 for g in groups[1:]) or any(len(g) > 8 for g in groups):
        return False
    if "." in value.replace("(", "").replace(")", ""):
        if len(groups) == 2 or any(len(g) == 1 for g in groups):
            return False  # a decimal or a version number
        if len(groups) == 4 and all(len(g) <= 3 for g in groups):
            return False  # a dotted quad
    return True


def _near_currency(text: str, start: int, end: int) -> bool:
    return bool(_CURRENCY_BEFORE.search(text[max(0, start - 5):start]) or _CURRENCY_AFTER.search(text[end:end + 9]))


def _phones(text: str) -> Iterator[Match]:
    for m in _PHONE.finditer(text):
        if _phone_ok(text, m.start(), m.end()):
            yield Match("phone", m.start(), m.end())


# --------------------------------------------------------------------------- finding, masking, redaction

# Order matters: when matches overlap, the earlier detector wins (a card is not also a phone).
_DETECTORS: tuple[Callable[[str], Iterator[Match]], ...] = (_emails, _ibans, _cards, _national_ids, _ips, _phones)


def find_pii(text: str, entities: Iterable[str] = ENTITIES, *, presidio: bool = False) -> list[Match]:
    """Non-overlapping PII matches in `text`, in order; only the requested `entities` are returned.

    Every detector runs whatever is requested, so an IBAN is never half-reported as a phone number.
    """
    wanted = set(entities)
    taken: list[Match] = []
    detectors: list[Callable[[str], Iterable[Match]]] = list(_DETECTORS)
    if presidio:
        detectors.append(_presidio_matches)
        wanted |= set(PRESIDIO_ENTITIES.values())
    for detect in detectors:
        for match in detect(text):
            if not any(match.start < t.end and t.start < match.end for t in taken):
                taken.append(match)
    return sorted((m for m in taken if m.entity in wanted), key=lambda m: m.start)


def mask(entity: str, value: str) -> str:
    """A preview that shows the kind and shape of a value but not the value."""
    if entity == "email":
        local, _, domain = value.partition("@")
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{host[:1]}***.{tld}"
    if entity == "credit_card":
        return _mask_digits(value, keep=4)
    if entity == "phone":
        return _mask_digits(value, keep=2)
    if entity == "iban":
        compact = value.replace(" ", "")
        return f"{compact[:2]}** **** {'*' * 4} **{compact[-2:]}"
    if entity == "ip_address":
        if ":" in value:
            return value.split(":", 1)[0] + ":****:****"
        return value.split(".", 1)[0] + ".*.*.*"
    if entity == "national_id":
        return re.sub(r"[A-Za-z0-9]", "*", value)
    return value[:1] + "*" * 3  # presidio names and places


def _mask_digits(value: str, keep: int) -> str:
    total = sum(ch.isdigit() for ch in value)
    out, seen = [], 0
    for ch in value:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > total - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def iter_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, string) for every string inside `value`: "text", "messages[2].content", "tokens[0]"."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from iter_strings(item, f"{path}[{i}]")


def scan_rows(
    rows: Iterable[dict],
    *,
    split: str,
    entities: list[str],
    where: Callable[[int], str] | None = None,
    skip_fields: set[str] | frozenset[str] = frozenset(),
    presidio: bool = False,
    max_located: int = 500,
) -> list[Finding]:
    """Every PII value in every string of every row (top-level `skip_fields`, e.g. the label, excepted).

    `where(row)` names a row's location; it can be slow (it reads the file), so only the rows of the
    first `max_located` findings are located that way, the others read "<split> row N".
    """
    if presidio:
        _presidio_engine()  # fail before scanning when the extra is missing
    findings: list[Finding] = []
    located: dict[int, str] = {}
    for index, row in enumerate(rows):
        for key, value in row.items():
            if key in skip_fields:
                continue
            for field, text in iter_strings(value, str(key)):
                for match in find_pii(text, entities, presidio=presidio):
                    place = _locate(index, split, where, located, len(findings) < max_located)
                    preview = mask(match.entity, text[match.start:match.end])
                    findings.append(Finding(split, index, field, match.entity, match.start, match.end, preview, place))
    return findings


def _locate(index: int, split: str, where: Callable[[int], str] | None, cache: dict[int, str], precise: bool) -> str:
    if index in cache:
        return cache[index]
    if where is None or not precise:
        return f"{split} row {index + 1}"
    cache[index] = where(index)
    return cache[index]


def redact_value(text: str, entities: Iterable[str], *, presidio: bool = False) -> tuple[str, int]:
    """`text` with each PII value replaced by its placeholder ([EMAIL], [PHONE], ...), and the count."""
    matches = find_pii(text, entities, presidio=presidio)
    parts, last = [], 0
    for match in matches:
        parts.append(text[last:match.start])
        parts.append(PLACEHOLDERS[match.entity])
        last = match.end
    parts.append(text[last:])
    return "".join(parts), len(matches)


def redact_row(
    row: dict, entities: Iterable[str], skip_fields: set[str] | frozenset[str] = frozenset(), *, presidio: bool = False
) -> tuple[dict, int]:
    """A redacted deep copy of `row` (top-level `skip_fields` untouched) and the number of replacements."""
    entities = list(entities)
    count = 0

    def redact(value: Any) -> Any:
        nonlocal count
        if isinstance(value, str):
            new, n = redact_value(value, entities, presidio=presidio)
            count += n
            return new
        if isinstance(value, dict):
            return {k: redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [redact(v) for v in value]
        return copy.deepcopy(value)

    out = {key: (copy.deepcopy(value) if key in skip_fields else redact(value)) for key, value in row.items()}
    return out, count


# --------------------------------------------------------------------------- optional Presidio

@lru_cache(maxsize=1)
def _presidio_engine() -> Any:
    """Presidio's analyzer, imported only when governance.presidio is on (it pulls spaCy models)."""
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        raise ConfigError(
            "governance.presidio: presidio-analyzer is not installed",
            fix="pip install 'tunelab[presidio]' or set governance.presidio: false",
        ) from None
    return AnalyzerEngine()


def _presidio_matches(text: str) -> Iterator[Match]:
    results = _presidio_engine().analyze(text=text, language="en", entities=list(PRESIDIO_ENTITIES))
    for result in results:
        entity = PRESIDIO_ENTITIES.get(result.entity_type)
        if entity is not None:
            yield Match(entity, result.start, result.end)
