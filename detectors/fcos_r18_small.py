# Small CPU variant of fcos_r50_fpn.py: ResNet-18 FPN (64 channels), 2 stacked head convs,
# 128 px images, regression ranges scaled down to the image size.
# Inherits everything else from the R50 config beside it (backbone init_cfg=None, from scratch).
_base_ = ['./fcos_r50_fpn.py']

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        # objects are 12-48 px in 128 px images: shrink FCOS's ranges to match
        regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 128), (128, 1e8))))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(filter_cfg=dict(min_size=4), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

train_cfg = dict(max_iters=2000, val_interval=2000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=2000,
         milestones=[1500, 1800], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=2000))
