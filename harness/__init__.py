"""The harness (``harness.py``): each example's fault with the plain server, no geventprobe.

Run ``harness/harness.py`` as a program; it imports nothing of geventprobe. This directory
ships inside geventprobe's wheel as ``geventprobe.harness`` only so that the Markdown
report can embed the very file the project checks its examples with (report/repro.py).
"""
