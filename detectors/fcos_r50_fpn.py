# FCOS ResNet-50 FPN with center sampling, norm_on_bbox, centerness_on_reg, GIoU and focal loss:
# the one-stage proxy detector of CSE-Autoloss (mmdet's
# fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py, adapted).
#
# MMDetection 3.x config (data, schedule and runtime from coco_detection.py); read by autoloss.detection.mmdet.detectors.
# No pretrained weights are available offline, so the backbone is a pytorch-style ResNet with
# init_cfg=None, trained from scratch (all stages trainable, BN in train mode). With an ImageNet
# checkpoint, set backbone.init_cfg, frozen_stages=1 and norm_eval=True.
# The searched losses replace bbox_head.loss_cls / loss_bbox; centerness keeps its BCE loss.
_base_ = ['./coco_detection.py']

# ---------------------------------------------------------------- model
model = dict(
    type='FCOS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',  # P6, P7 from P5
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=80,  # set by load_detector_config
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        # the "center-normbbox-centeronreg-giou" improvements
        norm_on_bbox=True,
        centerness_on_reg=True,
        dcn_on_last_conv=False,
        center_sampling=True,
        center_sample_radius=1.5,
        conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=None,
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))

# FCOS's usual optimiser detail: biases at twice the learning rate, without weight decay.
optim_wrapper = dict(paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0))
