"""Fine-tune an ImageNet-21k ViT-B/16 on CIFAR-100 (Table 2), NECO detection against CIFAR-10.

Set --config.model.pretrained_path to a local .npz (public big_vision/ViT naming)."""

from configs import base


def get_config():
  c = base.get_config()
  base.vit_finetune_recipe(c)
  c.dataset, c.ood_dataset = 'cifar100', 'cifar10'
  return c
