// The one text form of a layer program, written by ntkfast.arch (Arch.program_text) and read here by the
// bindings and by the CUDA emulation test alike:
//
//   ntkfast-program 2
//   input image H W C          (or: input vector D)
//   conv KY KX SY SX SAME|VALID|CIRCULAR W_STD B_STD|none ntk|standard WIDTH
//   dense W_STD B_STD|none ntk|standard WIDTH          (WIDTH: output channels, 0 if unknown)
//   relu | gelu | sign
//   abrelu A B | erf A B C | sin A B C | rectmono N | monomial N | hermite N
//   polynomial K C0 .. C(K-1)   (C_m multiplies x^m)
//   layernorm EPS
//   avgpool PY PX SY SX SAME|VALID | sumpool PY PX SY SX SAME|VALID
//   gaussianpool S SIGMA       (SIGMA 0: the default S / sqrt 2)
//   globalavgpool | globalsumpool | flatten
//   identity | fanout N | faninsum
//   parallel N                  (then N branches, each 'branch' followed by its layers, then 'end')
//
// one layer per line, in order; numbers in decimal (Python's repr round-trips exactly through strtod).
#pragma once
#include <string>

#include "core/program.hpp"

namespace ntkfast {

// Parses the text form; throws ProgramError naming the line on anything malformed.
ProgramSpec parse_program(const std::string& text);

// The text form of a spec (parse_program(format_program(s)) == s).
std::string format_program(const ProgramSpec& spec);

}  // namespace ntkfast
