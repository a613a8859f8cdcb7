"""HFL-Net (Lin et al., CVPR 2023): the network, its MANO layer and its geometry."""
