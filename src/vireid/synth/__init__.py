"""Synthetic datasets: people drawn from garment and body parameters, written in the real datasets' layouts.

``generator`` writes a SYSU-MM01/RegDB/LLCM-layout tree (using the same
``data.layouts`` the readers use), ``render`` draws one person under one
camera, ``domains`` makes shifted target domains for adaptation.
"""
