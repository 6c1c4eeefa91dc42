"""Layer 7, the report: the papers' reported values, the settings profiles, each paper's tables
(``<paper>_tables``) and figures (``<paper>_figures``) for paper in vilas, vit, ghiasi,
convit, the figure style, the explorers and their static twins, and the notebooks' setup and
glue. Imports the layers before it."""
