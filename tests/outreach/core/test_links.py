"""Preference links: only we can make one, it names one patient and language, and it expires."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from outreach.core.links import BadLink, sign, verify
from outreach.core.settings import SettingsError, load_settings

SECRET = b"k" * 40
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DAYS_30 = timedelta(days=30)


def _token(patient: str = "Patient/pat-1", language: str = "es") -> str:
    return sign(SECRET, patient, language, NOW, DAYS_30)


def _reason(token: str, secret: bytes = SECRET, now: datetime = NOW) -> str:
    with pytest.raises(BadLink) as caught:
        verify(secret, token, now)
    return caught.value.reason


def _flip(text: str, index: int) -> str:
    """The same text with one character changed (still a valid base64url character)."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1:]


def test_a_link_names_its_patient_language_and_expiry() -> None:
    claims = verify(SECRET, _token(), NOW + timedelta(days=29))
    assert claims.patient == "Patient/pat-1"
    assert claims.language == "es"
    assert claims.expires == NOW + DAYS_30


def test_a_bare_id_is_read_as_a_patient() -> None:
    assert verify(SECRET, _token("pat-1"), NOW).patient == "Patient/pat-1"


def test_the_longest_fhir_id_makes_a_url_safe_link_that_verifies() -> None:
    patient = "Patient/" + "a.b-C9" * 10 + "zzzz"  # 64 characters, every kind FHIR allows
    token = _token(patient)
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in token)
    assert verify(SECRET, token, NOW).patient == patient


@pytest.mark.parametrize("index", [0, 5, -1])
def test_a_tampered_payload_is_invalid(index: int) -> None:
    payload, signature = _token().split(".")
    position = index if index >= 0 else len(payload) + index
    assert _reason(f"{_flip(payload, position)}.{signature}") == "invalid"


def test_another_patient_in_a_genuine_signature_is_invalid() -> None:
    """Swapping in the payload of someone else's link keeps no signature valid."""
    _, signature = _token("Patient/pat-1").split(".")
    other_payload, _ = _token("Patient/pat-2").split(".")
    assert _reason(f"{other_payload}.{signature}") == "invalid"


def test_a_payload_rewritten_to_later_expiry_is_invalid() -> None:
    payload, signature = _token().split(".")
    patient, language, _ = base64.urlsafe_b64decode(payload + "==").decode().split("|")
    later = int((NOW + timedelta(days=3650)).timestamp())
    forged = base64.urlsafe_b64encode(f"{patient}|{language}|{later:x}".encode()).rstrip(b"=")
    assert _reason(f"{forged.decode()}.{signature}") == "invalid"


@pytest.mark.parametrize("index", [0, 10, -1])
def test_a_tampered_signature_is_invalid(index: int) -> None:
    payload, signature = _token().split(".")
    position = index if index >= 0 else len(signature) + index
    assert _reason(f"{payload}.{_flip(signature, position)}") == "invalid"


def test_a_link_made_with_another_secret_is_invalid() -> None:
    assert _reason(sign(b"o" * 40, "Patient/pat-1", "en", NOW, DAYS_30)) == "invalid"
    assert _reason(_token(), secret=b"o" * 40) == "invalid"


def test_a_link_past_its_date_is_expired_and_not_before() -> None:
    token = _token()
    expiry = NOW + DAYS_30
    assert verify(SECRET, token, expiry - timedelta(seconds=1)).patient == "Patient/pat-1"
    assert _reason(token, now=expiry) == "expired"
    assert _reason(token, now=expiry + timedelta(days=400)) == "expired"


def test_an_expired_forgery_is_invalid_not_expired() -> None:
    """The signature is checked first: a forger learns nothing from the expiry."""
    payload, signature = sign(SECRET, "Patient/pat-1", "en", NOW, timedelta(days=-1)).split(".")
    assert _reason(f"{payload}.{_flip(signature, 3)}") == "invalid"


GARBAGE = [
    "", ".", "..", "...", "a.b", "a.b.c", _token() + ".", "." + _token(),
    _token().replace(".", ".."), _token().replace(".", ""),
    _token() + "\n", " " + _token(), _token().upper(),
    "x" * 10_240, ("x" * 5_000) + "." + ("y" * 5_000),
    "ñandú.ñandú", "😀" * 30 + "." + "😀" * 22, "Patient/pat-1", "%2e%2e%2f", "\x00" * 40,
    "AAAA." + "A" * 22, "////." + "/" * 22, "abc=.AAAAAAAAAAAAAAAAAAAAAA",
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_invalid_and_raises_nothing_else(token: str) -> None:
    assert _reason(token) == "invalid"


def test_a_signed_payload_that_is_not_ours_is_invalid() -> None:
    """Even with the secret, a payload of the wrong shape is refused, not crashed on."""
    from outreach.core.links import _signature

    for text in ["", "pat-1|en", "pat-1|en|zz", "pat 1|en|ff", "pat-1|EN|ff", "a|b|c|d",
                 "pat-1|en|" + "f" * 40]:
        payload = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode() or "AAAA"
        token = f"{payload}.{_signature(SECRET, payload, 'preferences')}"
        assert _reason(token) == "invalid", text


@pytest.mark.parametrize("patient", [
    "", "Patient/", "Patient/a b", "Patient/a|b", "Patient/../etc", "Patient/" + "a" * 65,
    "Patient/ñ", "Practitioner/x", "Patient/x\n", "Patient/pat-1/_history/2",
])
def test_sign_refuses_what_is_not_a_patient_id(patient: str) -> None:
    with pytest.raises(ValueError, match="Patient id"):
        sign(SECRET, patient, "en", NOW, DAYS_30)


@pytest.mark.parametrize("language", ["", "EN", "eng", "e", "es-MX", "é"])
def test_sign_refuses_what_is_not_a_two_letter_language(language: str) -> None:
    with pytest.raises(ValueError, match="two-letter language"):
        sign(SECRET, "Patient/pat-1", language, NOW, DAYS_30)


def test_settings_make_a_public_link_only_when_the_page_is_on() -> None:
    settings = load_settings(preferences_secret="s" * 40,
                             public_url="https://outreach.example.org/", preferences_link_days=7)
    link = settings.preferences_link("Patient/pat-1", "es", NOW)
    assert link is not None and link.startswith("https://outreach.example.org/p/")
    claims = verify(b"s" * 40, link.rsplit("/", 1)[1], NOW)
    assert (claims.patient, claims.language, claims.expires) == (
        "Patient/pat-1", "es", NOW + timedelta(days=7))
    no_language = settings.preferences_link("Patient/pat-1", None, NOW)
    assert no_language is not None
    assert verify(b"s" * 40, no_language.rsplit("/", 1)[1], NOW).language == "en"
    assert load_settings(public_url="https://outreach.example.org").preferences_link(
        "Patient/pat-1", "en", NOW) is None
    assert load_settings(preferences_secret="s" * 40).preferences_link(
        "Patient/pat-1", "en", NOW) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="OUTREACH_PREFERENCES_SECRET"):
        load_settings(preferences_secret="too-short")


def test_a_link_for_one_page_does_not_open_another() -> None:
    """An offer link is signed for offers: it is no preference link, and the reverse."""
    token = sign(SECRET, "offer0123456789ab", "es", NOW, timedelta(days=1), purpose="offers")
    claims = verify(SECRET, token, NOW, purpose="offers")
    assert (claims.subject, claims.language) == ("offer0123456789ab", "es")
    with pytest.raises(BadLink):
        verify(SECRET, token, NOW)
    with pytest.raises(BadLink):
        verify(SECRET, _token("pat-1"), NOW, purpose="offers")
