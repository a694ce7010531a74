"""kushi.router: where a message goes.

The subscription trie (`SubscriptionTrie`), the shared-subscription groups
(`SharedSubscriptions`), both behind a per-topic cache (`TopicMatcher`), and the
retained messages (`RetainedStore`). Pure data structures: no I/O, no clock.
"""

from .matcher import MatchResult, TopicMatcher
from .retained import CLEARED, STORED, UNCHANGED, RetainedStore
from .shared import SharedSubscriptions
from .trie import SubscriptionTrie

__all__ = [
    "CLEARED",
    "STORED",
    "UNCHANGED",
    "MatchResult",
    "RetainedStore",
    "SharedSubscriptions",
    "SubscriptionTrie",
    "TopicMatcher",
]
