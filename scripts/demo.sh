#!/usr/bin/env bash
# The demo job: the paper's searched losses through the cheap gates (seconds), then a real, small
# CSE-Autoloss search for Faster R-CNN's classification loss on a generated synthetic COCO dataset
# (the ResNet-18 CPU variant, its backbone pretrained on the data's objects first; about 12 minutes on
# 2 CPU cores). It ends with the best losses as
# formulas and their mAP against the baseline's (the paper's initial loss CEI, trained on 3 seeds: the
# proxy's noise), after retraining the best one with 4 fresh seeds (the confirmation) and saying what that
# confirmed, with its interval. Then the run's report (figures and report.md) and the best loss
# exported as an MMDetection module (only when it was confirmed better than the baseline).
set -u
status=0
run() {
  echo; echo "\$ autoloss check '$1' --space $2"
  autoloss check "$1" --space "$2" --timeout 10 || status=$?
}
run CEI cls_softmax
run 'Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))' cls_softmax   # CSE-Autoloss-A_cls, the authors' string
run FLI cls_sigmoid
run 'Neg(Add(Mul(Q,Mul(Add(1,Serf(Sig(NY))),Log(Sig(X)))),Mul(Add(Sgdf(X),Neg(Q)),Mul(Add(Add(1,Neg(Q)),Neg(Add(1,Neg(Sig(X))))),Log(Add(1,Neg(Sig(X))))))))' cls_sigmoid  # B_cls
run GIoU reg
run 'Add(1,Neg(Add(Div(I,U),Neg(Div(Add(E,Neg(Add(I,2))),E)))))' reg   # CSE-Autoloss-A_reg
run 'Neg(Div(Add(Div(Neg(Add(Neg(E),Add(1,I))),Neg(Add(3,Add(2,U)))),Add(Div(E,E),Div(Neg(E),Neg(1)))),Neg(Add(Div(Neg(Add(U,Div(I,1))),Neg(3)),Neg(E)))))' reg  # B_reg
out="${AUTOLOSS_DEMO_OUT:-runs/demo-faster_rcnn-cls}"
# Start afresh, but delete only a run folder autoloss wrote (its run.sqlite); never a user's folder.
if [ -f "$out/run.sqlite" ]; then
  rm -rf "$out"
elif [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "demo: $out exists and is not an autoloss run; set AUTOLOSS_DEMO_OUT to another folder" >&2
  exit 2
fi
echo; echo "\$ autoloss search --detector faster_rcnn --branch cls --demo --out $out"
autoloss search --detector faster_rcnn --branch cls --demo --out "$out" || status=$?
echo; echo "\$ autoloss report $out"
autoloss report "$out" || status=$?
echo; echo "\$ autoloss export $out"
autoloss export "$out"
code=$?
if [ $code -eq 1 ]; then
  echo "(no loss was confirmed better than the baseline in this small budget, so nothing was exported;"
  echo " autoloss export $out --include-unconfirmed writes the best anyway, marked unconfirmed)"
elif [ $code -ne 0 ]; then
  status=$code
fi
# The last word: what the fresh seeds confirmed, with its interval and the test (the report's headline).
echo; echo "In short:"
grep -m1 -E '^\*\*(Confirmed|Nothing|No claim)' "$out/report/report.md" | sed 's/\*\*//g' || true
exit $status
