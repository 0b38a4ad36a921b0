"""COCO-2014: AttnGAN's COCO dimensions (GF 48 / DF 96 / R 3,
`taoxugit/AttnGAN code/cfg/coco_attn2.yml`; MirrorGAN released no COCO config).

  python -m mirrorgan_jax.main --config=configs/coco.py --workdir=runs/coco \
      --config.data.manual_dir=/path/to/coco \
      --config.damsm.trunk_weights=/path/to/inception_v3.pth \
      --config.stream.backbone_weights=/path/to/resnet152.pth

The ImageNet backbones, as for CUB (configs/cub.py): torchvision's Inception-v3 for the DAMSM
image encoder's frozen trunk (damsm.trunk_weights) and ResNet-152 for the STREAM caption CNN
(stream.backbone_weights), state dicts as .pth (restricted reader) or .npz, made once with
  python -c "import torch, torchvision.models as m; \
torch.save(m.inception_v3(weights='IMAGENET1K_V1').state_dict(), 'inception_v3.pth'); \
torch.save(m.resnet152(weights='IMAGENET1K_V1').state_dict(), 'resnet152.pth')"
"""

from configs import common


def get_config(arg: str = ""):
    c = common.get_base_config()
    c.data.name = "coco"
    c.data.tokenizer = "attngan"
    c.data.captions_per_image = 5
    c.data.words_num = 12
    c.model.n_words = 27297
    c.model.gf_dim, c.model.df_dim, c.model.r_num = 48, 96, 3
    c.train.batch_size = 14
    c.train.epochs = 120
    c.damsm.epochs = 600
    c.eval.words_num = 20
    return c
