"""The live recogniser: tracking, k-of-m confirmation, per-face gates, the per-frame pipeline,
the window, reports and close-day. Stores come from ``store``, matching from ``common``."""
