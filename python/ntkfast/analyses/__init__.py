"""The science around the kernels: the inductive-bias analyses and the beyond-NTK study.

- :mod:`~ntkfast.analyses.stability`: stability to deformations (Bietti & Mairal 2019, Fig. 1);
- :mod:`~ntkfast.analyses.spectrum`: Mercer eigenvalues on the sphere (Prop. 5), any activation;
- :mod:`~ntkfast.analyses.smoothness`: Hölder smoothness of the feature maps (Props. 3-4);
- :mod:`~ntkfast.analyses.dynamics`: spectral bias of the training dynamics;
- :mod:`~ntkfast.analyses.taylor`: quadratic Taylor models of wide networks (Bai & Lee 2020);
- :mod:`~ntkfast.analyses.plots`: every figure of the above (matplotlib is imported only there).
"""
