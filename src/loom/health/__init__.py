"""Checks that run: the probes (``probes``) and the loop that schedules them (``runner``)."""
