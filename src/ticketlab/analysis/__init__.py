"""Analysis of finished runs: tables now; reports, plots and interpolation later."""
