"""CUB-200-2011 with the Reed captions: the official MirrorGAN configuration
(`qiaott/MirrorGAN cfg/train_bird.yml`).

  python -m mirrorgan_jax.main --config=configs/cub.py --workdir=runs/cub \
      --config.data.manual_dir=/path/to/birds \
      --config.damsm.trunk_weights=/path/to/inception_v3.pth \
      --config.stream.backbone_weights=/path/to/resnet152.pth

The two ImageNet backbones of the official recipe, as torchvision state dicts (.pth, read by a
restricted reader that runs no pickled code, or .npz of the same keys):
  damsm.trunk_weights       Inception-v3: the DAMSM image encoder's trunk starts from it and stays
                            frozen (damsm.freeze_trunk, unset: frozen when a file is given);
  stream.backbone_weights   ResNet-152: the STREAM caption CNN's backbone (stream.freeze_backbone).
Made once with torchvision (an optional extra, not needed by the port):
  python -c "import torch, torchvision.models as m; \
torch.save(m.inception_v3(weights='IMAGENET1K_V1').state_dict(), 'inception_v3.pth'); \
torch.save(m.resnet152(weights='IMAGENET1K_V1').state_dict(), 'resnet152.pth')"
Without them both networks start from random weights, which is not MirrorGAN.
"""

from configs import common


def get_config(arg: str = ""):
    c = common.get_base_config()
    c.data.name = "cub"
    c.data.tokenizer = "attngan"
    c.data.captions_per_image = 10
    c.data.words_num = 18
    c.model.n_words = 5450
    c.model.gf_dim, c.model.df_dim, c.model.r_num = 32, 64, 2
    c.train.batch_size = 12
    c.train.epochs = 600
    c.train.lambda1 = 10.0
    c.eval.words_num = 25
    return c
