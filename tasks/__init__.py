"""Building blocks of matteflow: each module is plain logic plus, where needed, a thin Prefect task."""
