# Interface target carrying the project's warning flags; every target of ours links it.
add_library(project_warnings INTERFACE)
target_compile_options(project_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes
  -Wno-unused-parameter)
if(WERROR)
  target_compile_options(project_warnings INTERFACE -Werror)
endif()
