"""Layer 7, the report: the papers' reported values, the settings profiles, each paper's tables
(``<paper>_tables``), figures (``<paper>_figures``) and generated sentences
(``<paper>_sentences``) for paper in vilas, vit, ghiasi, convit, the figure style, the
explorers and their static twins, and the notebooks' setup (``notebook``) and page (``page``). Imports the layers before it."""
