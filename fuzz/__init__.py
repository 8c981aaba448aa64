"""The fuzzer: cases, strategies, runners, comparison, triage, store and the `normfuzz` CLI.

Kept import-light: `import fuzz` loads no numpy and no framework; import the submodules you need
(`fuzz.case`, `fuzz.cli`, ...).
"""

__version__ = "0.1.0"
