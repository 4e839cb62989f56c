"""A typo'd queue is named with the queue it was probably meant to be, never with a far one, and
the comparison stays bounded whatever names the Redis holds (they are data requeue does not control)."""

from __future__ import annotations

from requeue.queues.existence import QueueListing, closest_name


def test_the_nearest_queue_within_two_edits_is_suggested() -> None:
    names = ["critical", "default", "emails", "orders"]
    assert closest_name("ordres", names) == "orders"  # two letters swapped: two edits
    assert closest_name("Default", names) == "default"  # case is free
    assert closest_name("critcal", names) == "critical"  # one letter missing
    assert closest_name("email", ["emails", "mails"]) == "emails"  # a tie: the first in order
    assert closest_name("payments", names) is None  # nothing near
    assert closest_name("orders", names) is None  # the name itself is no suggestion
    assert closest_name("", names) is None


def test_the_message_puts_the_suggestion_before_the_listing() -> None:
    listing = QueueListing(("default", "orders"), more=False, found=("default", "orders"))
    assert listing.describe("ordres") == 'did you mean "orders"? queues there: default, orders'
    assert listing.describe("payments") == "queues there: default, orders"
    refused = QueueListing((), more=False, refused=True)
    assert refused.describe("ordres").startswith("cannot list the queues there")


def test_hostile_names_keep_the_comparison_bounded() -> None:
    """At most 200 names are compared, none longer than 100 characters, each in a band of five
    cells per character: bounded work whatever the Redis holds."""
    assert closest_name("ordres", ["far-away-name"] * 200 + ["orders"]) is None  # the 201st: not compared
    assert closest_name("ordres", ["far-away-name"] * 199 + ["orders"]) == "orders"
    assert closest_name("q" * 101, ["q" * 100]) is None  # a typo too long to compare
    assert closest_name("q" * 100, ["q" * 100_000, "q" * 99]) == "q" * 99  # a huge name is skipped
