"""Differentiable cell search: the architect (DARTS first/second order), mean shift (MS-DARTS), Hessian eigenvalue, schedules."""
