# Written by oneshot; run `gnuplot fig7.gp` in this folder.
set encoding utf8
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
    set terminal pngcairo size 1400,1000 enhanced font 'Sans,10'
} else {
    set terminal png size 1400,1000 enhanced
}
set output 'fig7.png'
set datafile separator ','
set grid lt 0 lw 0.5
set multiplot layout 2,2 title 'Figure 7: one-shot 5-way Omniglot, 64 channels, T = 50, meta-batch 4, 5000 hyper-iterations'
set key bottom right
set title 'meta-validation accuracy (20 tasks) vs hyper-iteration'
set xlabel 'hyper-iteration'; set ylabel 'accuracy (%)'
plot 'val_K1.csv' skip 1 using 1:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 1 title '1-RMD', \
     'val_K10.csv' skip 1 using 1:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 2 title '10-RMD', \
     'val_full.csv' skip 1 using 1:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 3 title 'Full RMD', \
     'val_short.csv' skip 1 using 1:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 5 title 'Short horizon (T=1)'
set title 'meta-validation accuracy vs training wall time'
set xlabel 'training time (s; hypergradients and updates only)'
plot 'val_K1.csv' skip 1 using 2:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 1 title '1-RMD', \
     'val_K10.csv' skip 1 using 2:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 2 title '10-RMD', \
     'val_full.csv' skip 1 using 2:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 3 title 'Full RMD', \
     'val_short.csv' skip 1 using 2:(100*$3) with linespoints pt 7 ps 0.6 lw 2 lc 5 title 'Short horizon (T=1)'
set title 'cosine(K-RMD, full RMD) on one task of the meta-batch'
set xlabel 'hyper-iteration'; set ylabel 'cosine similarity'
set yrange [0:1.12]
set key top center horizontal
plot 'cos_K1.csv' skip 1 using 1:2 with linespoints pt 7 ps 0.6 lw 2 lc 1 title '1-RMD', \
     'cos_K10.csv' skip 1 using 1:2 with linespoints pt 7 ps 0.6 lw 2 lc 2 title '10-RMD'
set yrange [*:*]
set title 'relative error ‖h_{T−K} − d_λf‖ / ‖d_λf‖ at the final λ of Full RMD'
set xlabel 'K (reverse depth; T = 50)'; set ylabel 'relative ℓ_2 error'
set logscale y; set format y '10^{%L}'
set key bottom left vertical maxrows 3
set yrange [*:1.5]
plot 'relerr_mean.csv' skip 1 using 1:($2 > 0 ? $2 : NaN) with linespoints pt 7 ps 0.6 lw 2 title 'learned ρ = 0.096/0.061/0.0063', \
     '' skip 1 using 1:($3 > 0 ? $3 : NaN) with linespoints pt 5 ps 0.6 lw 2 title 'not regularized (ρ = 0)', \
     '' skip 1 using 1:($4 > 0 ? $4 : NaN) with linespoints pt 9 ps 0.6 lw 2 title 'every ρ_l = 1 (set by hand)'
unset multiplot
