"""ResNet-50 on ImageNet-1k, paper Table 4 (timm defaults); OOD: CIFAR-100."""

from configs import base


def get_config():
  c = base.get_config()
  base.imagenet_resnet_recipe(c)
  c.model.name, c.dataset = 'resnet50', 'imagenet2012'
  return c
