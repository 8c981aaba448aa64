"""Shared pytest setup: Hypothesis profiles.

Profiles (choose with Hypothesis's own option, e.g. `pytest --hypothesis-profile=nightly`):

- `normfuzz` (default): Hypothesis defaults without the per-example deadline, which makes tests
  flaky on slow CI machines and on first calls into numpy or a framework.
- `nightly`: the same with 20x more examples, for nightly-size runs.

A test's own `@settings(...)` still overrides the profile.
"""

from hypothesis import settings

settings.register_profile("normfuzz", deadline=None)
settings.register_profile("nightly", deadline=None, max_examples=2000)
settings.load_profile("normfuzz")
