"""Anti-bot rules: captcha texts and answers, and what a blocklist entry may name.

Pure functions. A captcha is read by a person from a distorted image, so its alphabet leaves out
the characters people confuse (0/O, 1/I/L) and an answer is compared without regard to case or
surrounding spaces. A blocklist entry names exactly one mobile or one client address (or network).
"""

from __future__ import annotations

import ipaddress
import secrets

from railbook.domain.errors import InvalidInput
from railbook.domain.identity import validate_mobile

CAPTCHA_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CAPTCHA_LENGTH = 4
CAPTCHA_ANSWER_MAX = 16
CAPTCHA_ID_MAX = 64
BLOCK_REASON_MAX = 200

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def captcha_text(length: int = CAPTCHA_LENGTH) -> str:
    """A new captcha's text, drawn from the unambiguous alphabet by the system's secure random."""
    return "".join(secrets.choice(CAPTCHA_ALPHABET) for _ in range(length))


def normalise_answer(answer: str) -> str:
    """An answer as compared: upper case, no surrounding spaces."""
    return answer.strip().upper()


def answer_matches(expected: str, given: str) -> bool:
    """Whether ``given`` answers a captcha whose text is ``expected`` (case-insensitive, in
    constant time for answers of the same length)."""
    return secrets.compare_digest(normalise_answer(expected).encode(), normalise_answer(given).encode())


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, details={"fields": [{"field": field, "message": message}]})


def parse_block_ip(value: str) -> str:
    """An address (``203.0.113.7``, ``2001:db8::1``) or a network (``203.0.113.0/24``) in its
    canonical text: a single address without a prefix length, a network with host bits cleared."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _invalid("ip", "Not an IPv4 or IPv6 address or network.") from None
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def block_target(mobile: str | None, ip: str | None) -> tuple[str | None, str | None]:
    """(mobile, ip) of a new blocklist entry, validated: exactly one of the two is given."""
    if (mobile is None) == (ip is None):
        message = "Give exactly one of mobile and ip."
        raise InvalidInput(
            message,
            details={
                "fields": [{"field": "mobile", "message": message}, {"field": "ip", "message": message}]
            },
        )
    if mobile is not None:
        return validate_mobile(mobile), None
    assert ip is not None
    return None, parse_block_ip(ip)


def block_reason(reason: str) -> str:
    """A reason an operator can read later: 1 to BLOCK_REASON_MAX characters."""
    text = reason.strip()
    if not 1 <= len(text) <= BLOCK_REASON_MAX:
        raise _invalid("reason", f"A reason has 1 to {BLOCK_REASON_MAX} characters.")
    return text


def client_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as an address object (an IPv4-mapped IPv6 address as its IPv4 one); None
    for text that is no address (a test client's name, say)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed
