# Tied-covariance E-step and statistics for rows with missing values
# (included at the end of _cython.pyx). Empty until the kernels land.
