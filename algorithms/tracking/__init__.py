"""Tracking chain of the 2016 MagUp LHCb-like flash simulation (issue 4).

Modules: :mod:`features` (model inputs shared by runtime and training), :mod:`acceptance`,
:mod:`efficiency` (ONNX classifiers), :mod:`pv` (primary-vertex smearing), :mod:`ip` (numba IP /
IPchi2 kernels), :mod:`summary` (RecSummary), :mod:`ntuple` (Tracks TTree); resolution and
covariance models live in :mod:`ctb`, :mod:`resolution`, :mod:`covariance`.
Import the submodules explicitly; this package imports nothing eagerly.
"""
