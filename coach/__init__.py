"""coach: an offline, retrainable live call coach.

Audio in, both speakers transcribed, every customer utterance scored for escalation
and sentiment, the customer's trajectory followed, de-escalation prompts opened and
closed at the right moments. See README.md for the architecture.
"""
__version__ = "0.1.0"
