# The kiln-bench-compare executable's contract, run as CTest `bench_compare_cli`:
#   cmake -DTOOL=<kiln-bench-compare> -DDATA=<tests/data/bench_compare> -DOUT=<scratch dir> -P bench_compare_cli.cmake
# exit 1 naming the benchmark on the injected 20% slowdown, 0 on noise, 2 with a message naming
# the file on a missing or malformed input; --md and --svg write their files.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})

function(expect_run rc_expected out_regex err_regex)
  execute_process(COMMAND ${TOOL} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL rc_expected)
    message(FATAL_ERROR "kiln-bench-compare ${ARGN}: exit ${rc}, expected ${rc_expected}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  if(NOT out MATCHES "${out_regex}")
    message(FATAL_ERROR "kiln-bench-compare ${ARGN}: stdout does not match '${out_regex}':\n${out}")
  endif()
  if(NOT err MATCHES "${err_regex}")
    message(FATAL_ERROR "kiln-bench-compare ${ARGN}: stderr does not match '${err_regex}':\n${err}")
  endif()
  message(STATUS "ok: exit ${rc}: ${ARGN}")
endfunction()

expect_run(1 "Chain20_1K/compiled[^\n]*REGRESSION" "^$"
           ${DATA}/base.json ${DATA}/new_slow.json --threshold 5% --md ${OUT}/report.md --svg ${OUT}/chart.svg)
expect_run(0 "OK: no significant regression" "^$" ${DATA}/base.json ${DATA}/new_noise.json)
expect_run(2 "^$" "missing\\.json: cannot open" ${DATA}/base.json ${DATA}/missing.json)
expect_run(2 "^$" "truncated\\.json: invalid JSON at line [0-9]+, column [0-9]+" ${DATA}/truncated.json ${DATA}/base.json)
expect_run(2 "^$" "not_benchmark\\.json: no \"benchmarks\" array" ${DATA}/base.json ${DATA}/not_benchmark.json)
expect_run(2 "^$" "usage:" ${DATA}/base.json)

file(READ ${OUT}/chart.svg svg)
if(NOT svg MATCHES "^<svg xmlns=\"http://www.w3.org/2000/svg\".*</svg>\n$")
  message(FATAL_ERROR "chart.svg is not an <svg> document")
endif()
string(REGEX MATCHALL "<rect class=\"bar " bars "${svg}")
list(LENGTH bars nbars)
if(NOT nbars EQUAL 6)
  message(FATAL_ERROR "chart.svg has ${nbars} bars, expected 6 (one per benchmark)")
endif()
file(READ ${OUT}/report.md md)
if(NOT md MATCHES "^# Benchmark comparison" OR NOT md MATCHES "\\*\\*REGRESSION\\*\\*")
  message(FATAL_ERROR "report.md lacks its title or the regression:\n${md}")
endif()
