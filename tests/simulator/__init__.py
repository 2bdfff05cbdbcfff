"""Tests of the NanoGPT simulator."""
