"""Thin nipype interfaces: each reads files, calls plain functions, writes files in its cwd."""
