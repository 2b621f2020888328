// Compiled once so that its precompiled header (torch-pch.h) can be reused by every target.
