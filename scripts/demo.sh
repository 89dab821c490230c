#!/usr/bin/env bash
# The demo job: the paper's searched losses through the cheap gates, then a small CSE-Autoloss search
# on the cheap noisy-digits proxy task (about a minute on 2 CPU cores). Detector searches
# (`autoloss search --detector ... --demo`) replace the latter once the MMDetection proxy lands.
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
out="${AUTOLOSS_DEMO_OUT:-runs/demo-noisy-digits}"
rm -rf "$out"
echo; echo "\$ autoloss search --task noisy-digits --population 40 --generations 3 --top-k 4 --parents 4 --out $out"
autoloss search --task noisy-digits --population 40 --generations 3 --top-k 4 --parents 4 --workers 2 --out "$out" || status=$?
exit $status
