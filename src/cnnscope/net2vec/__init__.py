"""Net2Vec (Fong & Vedaldi, CVPR 2018): concepts as learned weightings of a layer's units.

Network Dissection scores one unit at a time; Net2Vec learns, per concept, a weight per unit (an
embedding) and shows how much better a combination segments and classifies the concept than the best
single unit, and how many units a concept needs. Everything here reads what dissection already made:
the extract step's activations, the packed probe set and the dissection thresholds.

* :mod:`.concepts` -- one streaming pass: which labels are concepts, their support per split, the
  images each category annotates, and each image's spatially averaged activations;
* :mod:`.segmentation` -- the segmentation embeddings (a 1x1 convolution, one output per concept,
  trained on the train split) and their set IoU on val against the best single unit and top-k units;
* :mod:`.classification` -- logistic regression on averaged activations, and average precision;
* :mod:`.embedding` -- the weight matrix's analyses: units carrying a share of the mass, top-k
  restrictions and each concept's nearest concepts.
"""
