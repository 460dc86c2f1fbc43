"""Anti-bot rules without I/O: captcha texts and answers, blocklist targets, the in-process block set."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from railbook.domain.antibot import (
    CAPTCHA_ALPHABET,
    answer_matches,
    block_target,
    captcha_text,
    client_address,
    parse_block_ip,
)
from railbook.domain.errors import InvalidInput
from railbook.services.members.blocklist import BlockSet
from railbook.services.members.ports import ActiveBlock


def test_captcha_texts_use_only_unambiguous_characters() -> None:
    assert not set("0O1IL") & set(CAPTCHA_ALPHABET)
    texts = {captcha_text() for _ in range(200)}
    assert len(texts) > 150
    assert all(len(t) == 4 and set(t) <= set(CAPTCHA_ALPHABET) for t in texts)


def test_answers_are_compared_without_case_or_spaces() -> None:
    assert answer_matches("AB3K", " ab3k ")
    assert not answer_matches("AB3K", "AB3")
    assert not answer_matches("AB3K", "")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7/32", "203.0.113.7"),
        ("203.0.113.77/24", "203.0.113.0/24"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8::1/48", "2001:db8::/48"),
    ],
)
def test_block_addresses_are_kept_in_canonical_form(given: str, canonical: str) -> None:
    assert parse_block_ip(given) == canonical


@pytest.mark.parametrize(
    ("mobile", "ip"), [(None, None), ("13912345678", "203.0.113.7"), ("12345678901", None)]
)
def test_a_block_names_exactly_one_valid_target(mobile: str | None, ip: str | None) -> None:
    with pytest.raises(InvalidInput):
        block_target(mobile, ip)


def test_mapped_addresses_read_as_ipv4() -> None:
    assert str(client_address("::ffff:203.0.113.7")) == "203.0.113.7"
    assert client_address("testclient") is None


def test_the_block_set_honours_until_and_networks() -> None:
    now = time.time()
    soon = dt.datetime.fromtimestamp(now + 60, dt.UTC)
    past = dt.datetime.fromtimestamp(now - 60, dt.UTC)
    blocks = BlockSet.of(
        [
            ActiveBlock("13912345678", None, soon, 7),
            ActiveBlock("13912345678", None, past, 7),  # the later end wins
            ActiveBlock(None, "203.0.113.7", None, None),
            ActiveBlock(None, "198.51.100.0/24", soon, None),
            ActiveBlock(None, "2001:db8::/32", None, None),
        ]
    )
    assert blocks.blocks_mobile("13912345678", now) == pytest.approx(now + 60)
    assert blocks.blocks_member(7, now) is not None
    assert blocks.blocks_member(7, now + 120) is None  # expired: no reload needed
    assert blocks.blocks_member(8, now) is None
    assert blocks.blocks_address("203.0.113.7", now) == float("inf")
    assert blocks.blocks_address("::ffff:203.0.113.7", now) == float("inf")
    assert blocks.blocks_address("198.51.100.200", now) is not None
    assert blocks.blocks_address("198.51.100.200", now + 120) is None
    assert blocks.blocks_address("2001:db8:5::9", now) is not None
    assert blocks.blocks_address("198.51.101.1", now) is None
    assert blocks.blocks_address("not an address", now) is None
