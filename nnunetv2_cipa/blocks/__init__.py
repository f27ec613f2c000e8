"""Building blocks of CIPA, one module each (networks are assembled in ``nnunetv2_cipa.architectures``).

All spatial blocks work on channels-last maps (B, H, W, C), as VMamba does; every selective scan goes
through ``blocks.scan_call.fp32_selective_scan``.
"""

from nnunetv2_cipa.blocks.channel_attention import ChannelAttention, ChannelAttentionBlock
from nnunetv2_cipa.blocks.crm import ChannelRectification
from nnunetv2_cipa.blocks.cvss_block import CVSSBlock
from nnunetv2_cipa.blocks.dcim import DCIM, DCIMStem, RegionLocalMamba
from nnunetv2_cipa.blocks.decoder import CVSSDecoder
from nnunetv2_cipa.blocks.drop_path import DropPath
from nnunetv2_cipa.blocks.encoder import VSSEncoder
from nnunetv2_cipa.blocks.patch_embed import PatchEmbed, PatchMerging
from nnunetv2_cipa.blocks.ss1d import SS1D
from nnunetv2_cipa.blocks.ss2d import SS2D, cross_merge, cross_scan
from nnunetv2_cipa.blocks.upsampling import FinalUpsampleX4, PatchExpand, UpsampleExpand
from nnunetv2_cipa.blocks.vss_block import VSSBlock

__all__ = [
    "CVSSBlock", "CVSSDecoder", "ChannelAttention", "ChannelAttentionBlock", "ChannelRectification",
    "DCIM", "DCIMStem", "DropPath", "FinalUpsampleX4", "PatchEmbed", "PatchExpand", "PatchMerging",
    "RegionLocalMamba", "SS1D", "SS2D", "UpsampleExpand", "VSSBlock", "VSSEncoder",
    "cross_merge", "cross_scan",
]
